package cli

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/internal/hostdclient"
)

// batchLimit is AWS's limit on WorkSpaces per batch call; longer lists are sent in batches.
const batchLimit = 25

func init() {
	register(&command{name: "workspaces", args: "", summary: "list WorkSpaces (all, or filtered)", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.directory, "directory", "", "only WorkSpaces in this directory (d-...)")
			fs.StringVar(&r.user, "user", "", "only this user's WorkSpaces")
			fs.StringVar(&r.bundle, "bundle", "", "only WorkSpaces of this bundle (wsb-...)")
			fs.BoolVar(&r.json, "json", false, "print JSON (AWS's Workspace shape)")
		}, run: listWorkspaces})
	register(&command{name: "describe", args: "WS_ID", summary: "show one WorkSpace in full", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.BoolVar(&r.json, "json", false, "print JSON (AWS's Workspace shape)")
		}, run: describeWorkspace})
	register(&command{name: "create", args: "--directory D --user U --bundle B", summary: "launch a WorkSpace for a directory user", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.directory, "directory", "", "the user's directory (d-...), required")
			fs.StringVar(&r.user, "user", "", "the directory user, required")
			fs.StringVar(&r.bundle, "bundle", "", "the bundle (wsb-...), required; hostd bundles lists them")
			fs.StringVar(&r.runningMode, "running-mode", "", "ALWAYS_ON (default) or AUTO_STOP")
			fs.IntVar(&r.autostopHours, "autostop-hours", 0, "AUTO_STOP: hours of inactivity before it stops (1-48; default 1)")
			fs.IntVar(&r.rootGiB, "root-gib", 0, "root volume size in GiB (default: the bundle's)")
			fs.IntVar(&r.userGiB, "user-gib", 0, "user volume size in GiB (default: the bundle's)")
			fs.BoolVar(&r.encryptRoot, "encrypt-root", false, "encrypt the root volume (needs --key)")
			fs.BoolVar(&r.encryptUser, "encrypt-user", false, "encrypt the user volume (needs --key)")
			fs.StringVar(&r.key, "key", "", "the encryption key: an id, alias/NAME or ARN of hostd's key store (hostd keys)")
			fs.BoolVar(&r.wait, "wait", false, "wait until it is AVAILABLE")
			fs.DurationVar(&r.timeout, "timeout", 30*time.Minute, "with --wait: how long to wait")
			fs.DurationVar(&r.interval, "interval", 2*time.Second, "with --wait: how often to check")
			fs.BoolVar(&r.json, "json", false, "print JSON (AWS's Workspace shape)")
		}, run: createWorkspace})
	for _, b := range []struct{ name, summary string }{
		{"reboot", "restart WorkSpaces"},
		{"stop", "stop AUTO_STOP WorkSpaces"},
		{"start", "start stopped AUTO_STOP WorkSpaces"},
		{"terminate", "delete WorkSpaces for good: VM, memory and volumes"},
	} {
		register(&command{name: b.name, args: "WS_ID...", summary: b.summary, minArgs: 1, maxArgs: -1, run: batch})
	}
	register(&command{name: "maintenance", args: "WS_ID on|off", summary: "put a WorkSpace into ADMIN_MAINTENANCE, or back to AVAILABLE",
		minArgs: 2, maxArgs: 2, run: maintenance})
	register(&command{name: "modify", args: "WS_ID [--running-mode M] [--autostop-hours N] [--compute C | --root-gib N | --user-gib N]",
		summary: "change a WorkSpace's running mode, AutoStop time, compute type or a volume's size", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.runningMode, "running-mode", "", "ALWAYS_ON or AUTO_STOP")
			fs.IntVar(&r.autostopHours, "autostop-hours", 0, "AUTO_STOP: hours of inactivity before it stops (1-48)")
			fs.StringVar(&r.compute, "compute", "", "new compute type: VALUE, STANDARD, PERFORMANCE, POWER or POWERPRO (the WorkSpace restarts)")
			fs.IntVar(&r.rootGiB, "root-gib", 0, "grow the root volume to this many GiB (the guide's groups)")
			fs.IntVar(&r.userGiB, "user-gib", 0, "grow the user volume to this many GiB (the guide's groups; online)")
		}, run: modify})
	register(&command{name: "wait", args: "WS_ID --state STATE", summary: "wait until a WorkSpace reaches a state, printing each change",
		minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.state, "state", "", "the state to wait for, e.g. AVAILABLE, STOPPED, TERMINATED (required)")
			fs.DurationVar(&r.timeout, "timeout", 30*time.Minute, "how long to wait")
			fs.DurationVar(&r.interval, "interval", 2*time.Second, "how often to check")
		}, run: waitCmd})
	register(&command{name: "bundles", args: "", summary: "list the bundles WorkSpaces can be launched from", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.BoolVar(&r.json, "json", false, "print JSON (AWS's WorkspaceBundle shape)")
		}, run: bundles})
}

func listWorkspaces(r *run) int {
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	in := &workspaces.DescribeWorkspacesInput{}
	if r.directory != "" {
		in.DirectoryId = aws.String(r.directory)
		if r.user != "" {
			in.UserName = aws.String(r.user)
		}
	}
	if r.bundle != "" {
		if r.directory != "" {
			return r.usageError("give --directory or --bundle, not both (the API filters by one)")
		}
		in.BundleId = aws.String(r.bundle)
	}
	var all []types.Workspace
	p := workspaces.NewDescribeWorkspacesPaginator(c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(r.ctx)
		if err != nil {
			return r.fail(err)
		}
		for _, w := range page.Workspaces {
			// --user without --directory: the API needs the directory, so filter here.
			if r.user != "" && r.directory == "" && !strings.EqualFold(aws.ToString(w.UserName), r.user) {
				continue
			}
			all = append(all, w)
		}
	}
	if r.json {
		return r.printJSON(map[string]any{"Workspaces": all})
	}
	if len(all) == 0 {
		fmt.Fprintln(r.stdout, "No WorkSpaces.")
		return exitOK
	}
	conn := r.connectionStates(c, all)
	t := newTable(r.stdout)
	t.row("WORKSPACE", "STATE", "USER", "DIRECTORY", "BUNDLE", "RUNNING MODE", "IP ADDRESS", "USER SESSION")
	for _, w := range all {
		id := aws.ToString(w.WorkspaceId)
		t.row(id, string(w.State), aws.ToString(w.UserName), aws.ToString(w.DirectoryId),
			aws.ToString(w.BundleId), runningMode(w.WorkspaceProperties), dash(aws.ToString(w.IpAddress)), dash(conn[id]))
	}
	t.flush()
	return exitOK
}

// connectionStates asks for the WorkSpaces' connection states, 25 at a time (the API's
// limit). The listing does without them if hostd cannot say.
func (r *run) connectionStates(c *hostdclient.Client, ws []types.Workspace) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(ws); i += 25 {
		var ids []string
		for _, w := range ws[i:min(i+25, len(ws))] {
			ids = append(ids, aws.ToString(w.WorkspaceId))
		}
		res, err := c.DescribeWorkspacesConnectionStatus(r.ctx, &workspaces.DescribeWorkspacesConnectionStatusInput{WorkspaceIds: ids})
		if err != nil {
			fmt.Fprintf(r.stderr, "hostd: connection states unavailable: %v\n", err)
			return out
		}
		for _, st := range res.WorkspacesConnectionStatus {
			out[aws.ToString(st.WorkspaceId)] = string(st.ConnectionState)
		}
	}
	return out
}

func runningMode(p *types.WorkspaceProperties) string {
	if p == nil {
		return "-"
	}
	if p.RunningMode == types.RunningModeAutoStop {
		if m := aws.ToInt32(p.RunningModeAutoStopTimeoutInMinutes); m > 0 {
			return fmt.Sprintf("AUTO_STOP (%s)", hours(m))
		}
	}
	return dash(string(p.RunningMode))
}

func hours(minutes int32) string {
	if minutes%60 == 0 {
		if minutes == 60 {
			return "1 hour"
		}
		return fmt.Sprintf("%d hours", minutes/60)
	}
	return fmt.Sprintf("%d min", minutes)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// getWorkspace returns one WorkSpace, or ok=false if hostd does not have it.
func (r *run) getWorkspace(c *hostdclient.Client, id string) (types.Workspace, bool, error) {
	out, err := c.DescribeWorkspaces(r.ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
	if err != nil {
		return types.Workspace{}, false, err
	}
	for _, w := range out.Workspaces {
		if aws.ToString(w.WorkspaceId) == id {
			return w, true, nil
		}
	}
	return types.Workspace{}, false, nil
}

func describeWorkspace(r *run) int {
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	id := r.args[0]
	w, ok, err := r.getWorkspace(c, id)
	if err != nil {
		return r.fail(err)
	}
	if !ok {
		return r.failf("ResourceNotFoundException: WorkSpace %s does not exist", id)
	}
	if r.json {
		return r.printJSON(w)
	}
	t := newTable(r.stdout)
	t.row("WorkSpace:", aws.ToString(w.WorkspaceId))
	t.row("State:", string(w.State))
	if w.ErrorCode != nil || w.ErrorMessage != nil {
		t.row("Error:", strings.TrimPrefix(aws.ToString(w.ErrorCode)+": "+aws.ToString(w.ErrorMessage), ": "))
	}
	t.row("User:", aws.ToString(w.UserName))
	t.row("Directory:", aws.ToString(w.DirectoryId))
	t.row("Bundle:", aws.ToString(w.BundleId))
	t.row("Computer name:", dash(aws.ToString(w.ComputerName)))
	t.row("IP address:", dash(aws.ToString(w.IpAddress)))
	if p := w.WorkspaceProperties; p != nil {
		t.row("Running mode:", runningMode(p))
		t.row("Compute type:", dash(string(p.ComputeTypeName)))
		t.row("Root volume:", fmt.Sprintf("%d GiB", aws.ToInt32(p.RootVolumeSizeGib)))
		t.row("User volume:", fmt.Sprintf("%d GiB", aws.ToInt32(p.UserVolumeSizeGib)))
		var protos []string
		for _, pr := range p.Protocols {
			protos = append(protos, string(pr))
		}
		t.row("Protocols:", dash(strings.Join(protos, ", ")))
	}
	if m := modifications(w.ModificationStates); m != "" {
		t.row("Modification:", strings.TrimPrefix(m, "; modifying "))
	}
	t.row("Encrypted volumes:", fmt.Sprintf("root %s, user %s", yesNo(aws.ToBool(w.RootVolumeEncryptionEnabled)), yesNo(aws.ToBool(w.UserVolumeEncryptionEnabled))))
	t.flush()
	return exitOK
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func createWorkspace(r *run) int {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--directory", r.directory}, {"--user", r.user}, {"--bundle", r.bundle}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return r.usageError("missing %s", strings.Join(missing, ", "))
	}
	req := types.WorkspaceRequest{DirectoryId: aws.String(r.directory), UserName: aws.String(r.user), BundleId: aws.String(r.bundle)}
	props := &types.WorkspaceProperties{}
	anyProp := false
	if r.runningMode != "" {
		m, ok := parseRunningMode(r.runningMode)
		if !ok {
			return r.usageError("--running-mode %q: want ALWAYS_ON or AUTO_STOP", r.runningMode)
		}
		props.RunningMode, anyProp = m, true
	}
	if r.set["autostop-hours"] {
		if r.autostopHours < 1 || r.autostopHours > 48 {
			return r.usageError("--autostop-hours %d: want 1 to 48", r.autostopHours)
		}
		props.RunningModeAutoStopTimeoutInMinutes, anyProp = aws.Int32(int32(r.autostopHours*60)), true
	}
	if r.set["root-gib"] {
		props.RootVolumeSizeGib, anyProp = aws.Int32(int32(r.rootGiB)), true
	}
	if r.set["user-gib"] {
		props.UserVolumeSizeGib, anyProp = aws.Int32(int32(r.userGiB)), true
	}
	if anyProp {
		req.WorkspaceProperties = props
	}
	if r.encryptRoot {
		req.RootVolumeEncryptionEnabled = aws.Bool(true)
	}
	if r.encryptUser {
		req.UserVolumeEncryptionEnabled = aws.Bool(true)
	}
	if r.key != "" {
		req.VolumeEncryptionKey = aws.String(r.key)
	}
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	out, err := c.CreateWorkspaces(r.ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{req}})
	if err != nil {
		return r.fail(err)
	}
	for _, f := range out.FailedRequests {
		return r.failf("cannot create a WorkSpace for %s in %s: %s: %s", r.user, r.directory, aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage))
	}
	if len(out.PendingRequests) != 1 {
		return r.failf("hostd accepted %d WorkSpaces for one request", len(out.PendingRequests))
	}
	w := out.PendingRequests[0]
	id := aws.ToString(w.WorkspaceId)
	if r.json && !r.wait {
		return r.printJSON(w)
	}
	t := newTable(r.stdout)
	t.row("WORKSPACE", "STATE", "USER", "DIRECTORY", "BUNDLE", "RUNNING MODE")
	t.row(id, string(w.State), aws.ToString(w.UserName), aws.ToString(w.DirectoryId), aws.ToString(w.BundleId), runningMode(w.WorkspaceProperties))
	t.flush()
	if !r.wait {
		return exitOK
	}
	return r.waitFor(c, id, types.WorkspaceStateAvailable)
}

func parseRunningMode(s string) (types.RunningMode, bool) {
	m := types.RunningMode(strings.ToUpper(strings.ReplaceAll(s, "-", "_")))
	return m, m == types.RunningModeAlwaysOn || m == types.RunningModeAutoStop
}

// batch runs reboot, stop, start or terminate over the ids, 25 at a time, and reports
// each WorkSpace's outcome.
func batch(r *run) int {
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	failed := map[string]string{}
	for start := 0; start < len(r.args); start += batchLimit {
		ids := r.args[start:min(start+batchLimit, len(r.args))]
		var fs []types.FailedWorkspaceChangeRequest
		var err error
		switch r.cmd.name {
		case "reboot":
			in := &workspaces.RebootWorkspacesInput{}
			for _, id := range ids {
				in.RebootWorkspaceRequests = append(in.RebootWorkspaceRequests, types.RebootRequest{WorkspaceId: aws.String(id)})
			}
			var out *workspaces.RebootWorkspacesOutput
			if out, err = c.RebootWorkspaces(r.ctx, in); err == nil {
				fs = out.FailedRequests
			}
		case "stop":
			in := &workspaces.StopWorkspacesInput{}
			for _, id := range ids {
				in.StopWorkspaceRequests = append(in.StopWorkspaceRequests, types.StopRequest{WorkspaceId: aws.String(id)})
			}
			var out *workspaces.StopWorkspacesOutput
			if out, err = c.StopWorkspaces(r.ctx, in); err == nil {
				fs = out.FailedRequests
			}
		case "start":
			in := &workspaces.StartWorkspacesInput{}
			for _, id := range ids {
				in.StartWorkspaceRequests = append(in.StartWorkspaceRequests, types.StartRequest{WorkspaceId: aws.String(id)})
			}
			var out *workspaces.StartWorkspacesOutput
			if out, err = c.StartWorkspaces(r.ctx, in); err == nil {
				fs = out.FailedRequests
			}
		case "terminate":
			in := &workspaces.TerminateWorkspacesInput{}
			for _, id := range ids {
				in.TerminateWorkspaceRequests = append(in.TerminateWorkspaceRequests, types.TerminateRequest{WorkspaceId: aws.String(id)})
			}
			var out *workspaces.TerminateWorkspacesOutput
			if out, err = c.TerminateWorkspaces(r.ctx, in); err == nil {
				fs = out.FailedRequests
			}
		}
		if err != nil {
			// The whole batch was refused; earlier batches stand and are reported.
			r.report(r.args[:start], failed)
			return r.fail(err)
		}
		for _, f := range fs {
			failed[aws.ToString(f.WorkspaceId)] = aws.ToString(f.ErrorCode) + ": " + aws.ToString(f.ErrorMessage)
		}
	}
	r.report(r.args, failed)
	if len(failed) > 0 {
		return r.failf("%d of %d WorkSpaces could not be %s", len(failed), len(r.args), pastTense(r.cmd.name))
	}
	return exitOK
}

func pastTense(verb string) string {
	switch verb {
	case "stop":
		return "stopped"
	case "terminate":
		return "terminated"
	}
	return verb + "ed"
}

func (r *run) report(ids []string, failed map[string]string) {
	if len(ids) == 0 {
		return
	}
	t := newTable(r.stdout)
	t.row("WORKSPACE", "RESULT")
	for _, id := range ids {
		if msg, ok := failed[id]; ok {
			t.row(id, "FAILED: "+msg)
		} else {
			t.row(id, r.cmd.name+" requested")
		}
	}
	t.flush()
}

func maintenance(r *run) int {
	id := r.args[0]
	var target types.TargetWorkspaceState
	switch strings.ToLower(r.args[1]) {
	case "on":
		target = types.TargetWorkspaceStateAdminMaintenance
	case "off":
		target = types.TargetWorkspaceStateAvailable
	default:
		return r.usageError("%q: want on or off", r.args[1])
	}
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	if _, err := c.ModifyWorkspaceState(r.ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: aws.String(id), WorkspaceState: target}); err != nil {
		return r.fail(err)
	}
	fmt.Fprintf(r.stdout, "%s: maintenance %s (%s)\n", id, strings.ToLower(r.args[1]), target)
	return exitOK
}

func modify(r *run) int {
	id := r.args[0]
	props := &types.WorkspaceProperties{}
	if r.runningMode == "" && !r.set["autostop-hours"] && !r.set["compute"] && !r.set["root-gib"] && !r.set["user-gib"] {
		return r.usageError("give --running-mode, --autostop-hours, --compute, --root-gib or --user-gib")
	}
	if r.set["compute"] {
		props.ComputeTypeName = types.Compute(strings.ToUpper(r.compute))
	}
	for _, v := range []struct {
		flag string
		gib  int
		to   **int32
	}{{"root-gib", r.rootGiB, &props.RootVolumeSizeGib}, {"user-gib", r.userGiB, &props.UserVolumeSizeGib}} {
		if !r.set[v.flag] {
			continue
		}
		if v.gib < 1 || v.gib > 2000 {
			return r.usageError("--%s %d: want 1 to 2000", v.flag, v.gib)
		}
		*v.to = aws.Int32(int32(v.gib))
	}
	if r.runningMode != "" {
		m, ok := parseRunningMode(r.runningMode)
		if !ok {
			return r.usageError("--running-mode %q: want ALWAYS_ON or AUTO_STOP", r.runningMode)
		}
		props.RunningMode = m
	}
	if r.set["autostop-hours"] {
		if r.autostopHours < 1 || r.autostopHours > 48 {
			return r.usageError("--autostop-hours %d: want 1 to 48", r.autostopHours)
		}
		props.RunningModeAutoStopTimeoutInMinutes = aws.Int32(int32(r.autostopHours * 60))
	}
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	if _, err := c.ModifyWorkspaceProperties(r.ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: aws.String(id), WorkspaceProperties: props}); err != nil {
		return r.fail(err)
	}
	w, ok, err := r.getWorkspace(c, id)
	if err != nil || !ok {
		fmt.Fprintf(r.stdout, "%s: properties changed\n", id)
		return exitOK
	}
	p := w.WorkspaceProperties
	fmt.Fprintf(r.stdout, "%s: %s, running mode %s, compute %s, root %d GiB, user %d GiB%s\n", id, w.State, runningMode(p), p.ComputeTypeName,
		aws.ToInt32(p.RootVolumeSizeGib), aws.ToInt32(p.UserVolumeSizeGib), modifications(w.ModificationStates))
	return exitOK
}

// modifications names the changes a WorkSpace is making (AWS's ModificationStates).
func modifications(ms []types.ModificationState) string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Resource)+" "+string(m.State))
	}
	if len(out) == 0 {
		return ""
	}
	return "; modifying " + strings.Join(out, ", ")
}

func waitCmd(r *run) int {
	if r.state == "" {
		return r.usageError("--state is required")
	}
	target := types.WorkspaceState(strings.ToUpper(r.state))
	if !slices.Contains(types.WorkspaceState("").Values(), target) {
		var names []string
		for _, s := range types.WorkspaceState("").Values() {
			names = append(names, string(s))
		}
		return r.usageError("--state %q: want one of %s", r.state, strings.Join(names, ", "))
	}
	if r.interval <= 0 || r.timeout <= 0 {
		return r.usageError("--interval and --timeout must be positive")
	}
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	return r.waitFor(c, r.args[0], target)
}

// waitFor polls id until it is in target, printing each state it passes through. It fails
// on ERROR (with the reason), on TERMINATED when waiting for anything else, when the
// WorkSpace disappears, and on timeout.
func (r *run) waitFor(c *hostdclient.Client, id string, target types.WorkspaceState) int {
	start := time.Now()
	deadline := start.Add(r.timeout)
	last := types.WorkspaceState("")
	for {
		w, ok, err := r.getWorkspace(c, id)
		if err != nil {
			return r.fail(err)
		}
		elapsed := time.Since(start).Round(time.Second)
		if !ok {
			if target == types.WorkspaceStateTerminated && last != "" {
				fmt.Fprintf(r.stdout, "%s  TERMINATED (record removed)  %s\n", id, elapsed)
				return exitOK
			}
			return r.failf("ResourceNotFoundException: WorkSpace %s does not exist", id)
		}
		if w.State != last {
			fmt.Fprintf(r.stdout, "%s  %s  %s\n", id, w.State, elapsed)
			last = w.State
		}
		switch {
		case w.State == target:
			return exitOK
		case w.State == types.WorkspaceStateError:
			reason := strings.TrimPrefix(aws.ToString(w.ErrorCode)+": "+aws.ToString(w.ErrorMessage), ": ")
			if reason == "" {
				reason = "no reason given"
			}
			return r.failf("%s went to ERROR while waiting for %s: %s", id, target, reason)
		case w.State == types.WorkspaceStateTerminated:
			return r.failf("%s was terminated while waiting for %s", id, target)
		}
		if time.Now().Add(r.interval).After(deadline) {
			return r.failf("timed out after %s waiting for %s to be %s; it is %s", r.timeout, id, target, w.State)
		}
		select {
		case <-r.ctx.Done():
			return r.failf("interrupted while waiting for %s to be %s; it is %s", id, target, w.State)
		case <-time.After(r.interval):
		}
	}
}

func bundles(r *run) int {
	c, err := r.client()
	if err != nil {
		return r.usageError("%v", err)
	}
	var all []types.WorkspaceBundle
	p := workspaces.NewDescribeWorkspaceBundlesPaginator(c, &workspaces.DescribeWorkspaceBundlesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(r.ctx)
		if err != nil {
			return r.fail(err)
		}
		all = append(all, page.Bundles...)
	}
	if r.json {
		return r.printJSON(map[string]any{"Bundles": all})
	}
	if len(all) == 0 {
		fmt.Fprintln(r.stdout, "No bundles.")
		return exitOK
	}
	t := newTable(r.stdout)
	t.row("BUNDLE", "NAME", "COMPUTE", "ROOT GiB", "USER GiB", "IMAGE", "DESCRIPTION")
	for _, b := range all {
		compute, root, user := "-", "-", "-"
		if b.ComputeType != nil {
			compute = string(b.ComputeType.Name)
		}
		if b.RootStorage != nil {
			root = aws.ToString(b.RootStorage.Capacity)
		}
		if b.UserStorage != nil {
			user = aws.ToString(b.UserStorage.Capacity)
		}
		t.row(aws.ToString(b.BundleId), aws.ToString(b.Name), compute, root, user, dash(aws.ToString(b.ImageId)), dash(aws.ToString(b.Description)))
	}
	t.flush()
	return exitOK
}
