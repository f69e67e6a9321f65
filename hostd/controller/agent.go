package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"deskhost/hostd/agent"
)

// DialAgent connects to a guest agent over its channel socket (hostd/agent).
func DialAgent(ctx context.Context, socket string) (Agent, error) {
	c, err := agent.Dial(ctx, socket)
	if err != nil {
		return nil, err
	}
	// The socket's directory is named after the WorkSpace: the agent must say it is that
	// WorkSpace (guide §19: a guest that changed identity is not healthy).
	return &agentClient{c: c, id: filepath.Base(filepath.Dir(socket))}, nil
}

type agentClient struct {
	c  *agent.Client
	id string
}

// Ping succeeds when the agent answers as this WorkSpace with both volumes mounted.
func (a *agentClient) Ping(ctx context.Context) error {
	st, err := a.c.Status(ctx)
	if err != nil {
		return err
	}
	switch {
	case st.WorkspaceID != a.id:
		return fmt.Errorf("the guest answers as %q, not %s", st.WorkspaceID, a.id)
	case !st.RootMounted || !st.HomeMounted:
		return fmt.Errorf("the guest is up but its volumes are not mounted (root %v, home %v): %s",
			st.RootMounted, st.HomeMounted, strings.Join(st.Errors, "; "))
	}
	return nil
}

func (a *agentClient) Freeze(ctx context.Context) ([]string, error) { return a.c.Freeze(ctx) }
func (a *agentClient) Thaw(ctx context.Context) ([]string, error)   { return a.c.Thaw(ctx) }

func (a *agentClient) Shutdown(ctx context.Context) error { return a.c.Shutdown(ctx, false) }
func (a *agentClient) Close() error                       { return a.c.Close() }

func (a *agentClient) GrowFS(ctx context.Context, volume string, minBytes uint64) (uint64, uint64, error) {
	return a.c.GrowFS(ctx, volume, minBytes)
}
