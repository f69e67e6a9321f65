package cli

// The fleet's hosts: list them (state, capacity, load), drain one, approve a host waiting
// to join by the code its console shows, preapprove a hardware id. hostd's own operations.

import (
	"flag"
	"fmt"
	"strconv"
	"time"

	"deskhost/internal/hostdclient"
)

func init() {
	register(&command{name: "hosts", args: "", summary: "list the fleet's hosts: state (joining, ready, draining, down), capacity, load", maxArgs: 0, flags: jsonFlag, run: hostsList})
	register(&command{name: "hosts drain", args: "HOST_ID", summary: "place no new WorkSpaces on a host (its own keep running)", minArgs: 1, maxArgs: 1, run: hostsDrain})
	register(&command{name: "hosts undrain", args: "HOST_ID", summary: "place new WorkSpaces on a drained host again", minArgs: 1, maxArgs: 1, run: hostsDrain})
	register(&command{name: "hosts approve", args: "CODE", summary: "let the host whose console shows this join code join the fleet", minArgs: 1, maxArgs: 1, run: hostsApprove})
	register(&command{name: "hosts preapprove", args: "HARDWARE_ID [--valid 24h]", summary: "let a host join unattended, once: dmi-uuid:… or mac:… (diskless PXE hosts)", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.DurationVar(&r.timeout, "valid", 24*time.Hour, "how long the preapproval waits for its host")
		}, run: hostsPreapprove})
	register(&command{name: "hosts workspaces", args: "[WS_ID...]", summary: "which host runs each WorkSpace", maxArgs: -1, flags: jsonFlag, run: hostsWorkspaces})
}

func hostsList(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.DescribeHosts(r.ctx)
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out.Hosts)
	}
	t := newTable(r.stdout)
	t.row("HOST", "NAME", "STATE", "ETCD", "VCPU (USED/CAP)", "MEMORY MiB (USED/CAP)", "WORKSPACES", "ADDRESS", "HARDWARE ID")
	for _, h := range out.Hosts {
		id, etcd := h.HostId, "-"
		if h.State == "joining" {
			id = "join code " + h.JoinCode
		}
		if h.EtcdMember {
			etcd = "member"
		}
		addr := h.Addresses.Fleet
		if addr == "" {
			addr = h.Addresses.API
		}
		t.row(id, dash(h.Name), h.State, etcd,
			fmt.Sprintf("%d/%d", h.Reserved.VCPUs, h.Capacity.VCPUs), fmt.Sprintf("%d/%d", h.Reserved.MemoryMiB, h.Capacity.MemoryMiB),
			strconv.Itoa(h.Workspaces), dash(addr), dash(h.HardwareId))
	}
	t.flush()
	return exitOK
}

func hostsDrain(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	in := &hostdclient.HostIDInput{HostId: r.args[0]}
	if r.cmd.name == "hosts drain" {
		if err := c.DrainHost(r.ctx, in); err != nil {
			return r.fail(err)
		}
		return r.done("%s: draining: no new WorkSpaces are placed on it", r.args[0])
	}
	if err := c.UndrainHost(r.ctx, in); err != nil {
		return r.fail(err)
	}
	return r.done("%s: ready: new WorkSpaces may be placed on it", r.args[0])
}

func hostsApprove(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.ApproveHost(r.ctx, &hostdclient.ApproveHostInput{Code: r.args[0]})
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s (%s, %s): approved; it joins the fleet as soon as it has its credentials", out.HostId, out.Name, out.HardwareId)
}

func hostsPreapprove(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if r.timeout < time.Minute {
		return r.usageError("--valid must be at least a minute")
	}
	out, err := c.PreapproveHost(r.ctx, &hostdclient.PreapproveHostInput{HardwareId: r.args[0], ValidMinutes: int(r.timeout / time.Minute)})
	if err != nil {
		return r.fail(err)
	}
	until := ""
	if out.Expires != nil {
		until = " until " + time.Unix(int64(*out.Expires), 0).UTC().Format(time.RFC3339)
	}
	return r.done("%s: preapproved%s: it joins without approval, once", out.HardwareId, until)
}

func hostsWorkspaces(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.DescribeWorkspaceHosts(r.ctx, &hostdclient.WorkspaceHostsInput{WorkspaceIds: r.args})
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out.Placements)
	}
	t := newTable(r.stdout)
	t.row("WORKSPACE", "HOST", "HOST NAME", "HOST STATE")
	for _, p := range out.Placements {
		t.row(p.WorkspaceId, dash(p.HostId), dash(p.HostName), dash(p.HostState))
	}
	t.flush()
	return exitOK
}
