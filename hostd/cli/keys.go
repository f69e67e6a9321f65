package cli

// The key store (hostd keys): the keys that encrypt WorkSpace volumes, which
// `hostd create --encrypt-root/--encrypt-user --key` and CreateWorkspaces'
// VolumeEncryptionKey name. hostd's own operations.

import (
	"flag"
	"fmt"
	"strconv"
	"time"

	"deskhost/internal/hostdclient"
)

func init() {
	register(&command{name: "keys", args: "", summary: "list the volume encryption keys: state, alias, WorkSpaces each encrypts (of 500)", maxArgs: 0, flags: jsonFlag, run: keysList})
	register(&command{name: "keys create", args: "[--alias NAME] [--description TEXT]", summary: "make a volume encryption key (256 random bits, sealed by the host's master key)", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.alias, "alias", "", "alias/NAME (or NAME) to name it by")
			fs.StringVar(&r.description, "description", "", "what it is for")
			jsonFlag(r, fs)
		}, run: keysCreate})
	register(&command{name: "keys enable", args: "KEY", summary: "enable a key (id, alias/NAME or ARN)", minArgs: 1, maxArgs: 1, run: keysSet})
	register(&command{name: "keys disable", args: "KEY", summary: "disable a key: its WorkSpaces no longer start, reboot, rebuild or restore", minArgs: 1, maxArgs: 1, run: keysSet})
}

func keysList(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.DescribeKeys(r.ctx, &hostdclient.DescribeKeysInput{})
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out.Keys)
	}
	t := newTable(r.stdout)
	t.row("KEY", "ALIAS", "STATE", "WORKSPACES", "CREATED", "DESCRIPTION")
	for _, k := range out.Keys {
		t.row(k.KeyId, dash(k.Alias), keyState(k.Enabled), fmt.Sprintf("%d/%d", k.Workspaces, k.WorkspaceLimit),
			time.Unix(int64(k.CreationDate), 0).UTC().Format(time.RFC3339), dash(k.Description))
	}
	t.flush()
	return exitOK
}

func keyState(enabled bool) string {
	if enabled {
		return "enabled"
	}
	return "disabled"
}

func keysCreate(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.CreateKey(r.ctx, &hostdclient.CreateKeyInput{Alias: r.alias, Description: r.description})
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out.Key)
	}
	t := newTable(r.stdout)
	t.row("Key:", out.Key.KeyId)
	t.row("ARN:", out.Key.Arn)
	t.row("Alias:", dash(out.Key.Alias))
	t.row("WorkSpaces:", "0/"+strconv.Itoa(out.Key.WorkspaceLimit))
	t.flush()
	return exitOK
}

func keysSet(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	in := &hostdclient.KeyIDInput{KeyId: r.args[0]}
	var out *hostdclient.KeyOutput
	var err error
	if r.cmd.name == "keys enable" {
		out, err = c.EnableKey(r.ctx, in)
	} else {
		out, err = c.DisableKey(r.ctx, in)
	}
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s: %s", out.Key.KeyId, keyState(out.Key.Enabled))
}
