// Self-service (guide: "Enable Self-Service WorkSpace Management Capabilities for Your
// Users"; catalog §11): a logged-in user restarts their WorkSpace, increases its volumes,
// changes its compute type or switches its running mode from the client, each only where
// the directory's self-service permissions allow it. POST /pcoip-broker/self-service
// takes a JSON SelfServiceRequest with the broker session's cookie and answers a JSON
// SelfServiceResult. The broker asks hostd with the service's credentials (the guide's
// AmazonWorkSpacesSelfServiceAccess role); every action is audited.

package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/session"
	"deskhost/zeroclient/workspaces"
)

// SelfServicePath is where the self-service actions are posted (under the cookie's path).
const SelfServicePath = "/pcoip-broker/self-service"

// The self-service actions.
const (
	ActionRestart           = "restart"
	ActionIncreaseVolume    = "increase-volume-size"
	ActionChangeComputeType = "change-compute-type"
	ActionSwitchRunningMode = "switch-running-mode"
	ActionRebuild           = "rebuild"
)

// SelfServiceRequest is one action. Only the fields of its action may be set.
type SelfServiceRequest struct {
	Action            string `json:"action"`
	ComputeType       string `json:"computeType,omitempty"`
	RootVolumeSizeGib int    `json:"rootVolumeSizeGib,omitempty"`
	UserVolumeSizeGib int    `json:"userVolumeSizeGib,omitempty"`
	RunningMode       string `json:"runningMode,omitempty"`
	// Confirm is required by rebuild, which loses what the root volume holds and what the
	// user volume got since its last backup.
	Confirm bool `json:"confirm,omitempty"`
}

// SelfServiceResult is the answer: Result is one of the Result* values.
type SelfServiceResult struct {
	Result      string `json:"result"`
	Message     string `json:"message"`
	WorkspaceID string `json:"workspaceId,omitempty"`
}

// Self-service results.
const (
	ResultAccepted     = "accepted"
	ResultForbidden    = "forbidden"      // the directory's permission is off
	ResultInvalid      = "invalid"        // the request is wrong (named in the message)
	ResultNotAuthed    = "not-authorized" // no login
	ResultRefused      = "refused"        // hostd refused it (its message)
	ResultNotAvailable = "not-available"  // the host cannot do it yet
	ResultFailed       = "failed"
)

// The guide's limits for users (catalog §11): "Users can increase the size of the root
// volume ... up to 175 GB, and the size of the user volume ... up to 100 GB".
const (
	MaxSelfServiceRootGib = 175
	MaxSelfServiceUserGib = 100
)

// Messages of self-service refusals, in the guide's words where it has them.
const (
	MsgVolumeCap = "Users can increase the size of the root volume up to 175 GB, and the size of the user volume up to 100 GB."
	// MsgRebuildTooSoon: the guide's 12-hour wait, which is when the first backup of the
	// user volume is taken (a rebuild restores it).
	MsgRebuildTooSoon = "For a newly created WorkSpace, users must wait 12 hours before they can rebuild: your user volume has no backup yet."
	MsgRebuildConfirm = "Rebuilding recreates your WorkSpace's root volume and restores your user volume from its last backup: confirm the rebuild."
	MsgRestarted      = "Restarting disconnects you from your WorkSpace, shuts it down, and restarts it. Your data, operating system, and system settings are not affected."
	MsgCompute        = "When a WorkSpace compute type change is in progress, you are disconnected from your WorkSpace, and you can't use or change the WorkSpace. This process may take up to an hour."
)

// MsgRebuilding is the answer to an accepted rebuild: what the user gets back, in the
// guide's words.
func MsgRebuilding(backup time.Time) string {
	return "Your WorkSpace is being rebuilt: you are disconnected, and this process might take up to an hour. Your user volume is restored from its backup of " +
		backup.UTC().Format("2006-01-02 15:04 MST") + "; because backups are completed every 12 hours, your data might be up to 12 hours old."
}

// MsgSelfServiceOff is the refusal of an action the directory does not allow; perm is the
// guide's name of the permission ("Restart WorkSpace from client", ...).
func MsgSelfServiceOff(perm string) string {
	return fmt.Sprintf("Your administrator has not enabled %q for your directory (User Self-Service Permissions). Please contact your administrator.", perm)
}

// permission is an action's permission: its guide name and setting.
func permission(action string, p catalog.SelfServicePermissions) (string, catalog.Setting, bool) {
	switch action {
	case ActionRestart:
		return "Restart WorkSpace from client", p.RestartWorkspace, true
	case ActionIncreaseVolume:
		return "Increase volume size", p.IncreaseVolumeSize, true
	case ActionChangeComputeType:
		return "Change compute type", p.ChangeComputeType, true
	case ActionSwitchRunningMode:
		return "Switch running mode", p.SwitchRunningMode, true
	case ActionRebuild:
		return "Rebuild WorkSpace from client", p.RebuildWorkspace, true
	}
	return "", "", false
}

// checkRequest checks a request's fields against its action (pure logic).
func checkRequest(q SelfServiceRequest, ws workspaces.Workspace) error {
	extra := func(ok bool) error {
		if !ok {
			return fmt.Errorf("action %s takes no other field than its own", q.Action)
		}
		return nil
	}
	switch q.Action {
	case ActionRestart:
		return extra(q == SelfServiceRequest{Action: q.Action})
	case ActionRebuild:
		if !q.Confirm {
			return errors.New(MsgRebuildConfirm)
		}
		return extra(q == SelfServiceRequest{Action: q.Action, Confirm: true})
	case ActionChangeComputeType:
		if q.ComputeType == "" {
			return errors.New("computeType is required")
		}
		return extra(q.RootVolumeSizeGib == 0 && q.UserVolumeSizeGib == 0 && q.RunningMode == "")
	case ActionSwitchRunningMode:
		if q.RunningMode != "ALWAYS_ON" && q.RunningMode != "AUTO_STOP" {
			return fmt.Errorf("runningMode %q must be ALWAYS_ON or AUTO_STOP", q.RunningMode)
		}
		return extra(q.ComputeType == "" && q.RootVolumeSizeGib == 0 && q.UserVolumeSizeGib == 0)
	case ActionIncreaseVolume:
		if q.RootVolumeSizeGib == 0 && q.UserVolumeSizeGib == 0 {
			return errors.New("rootVolumeSizeGib or userVolumeSizeGib is required")
		}
		if q.RootVolumeSizeGib < 0 || q.UserVolumeSizeGib < 0 {
			return errors.New("volume sizes are positive numbers of GiB")
		}
		if q.RootVolumeSizeGib > 0 && q.RootVolumeSizeGib <= ws.RootVolumeSizeGib {
			return fmt.Errorf("rootVolumeSizeGib %d: the root volume is %d GiB already; it can only grow", q.RootVolumeSizeGib, ws.RootVolumeSizeGib)
		}
		if q.UserVolumeSizeGib > 0 && q.UserVolumeSizeGib <= ws.UserVolumeSizeGib {
			return fmt.Errorf("userVolumeSizeGib %d: the user volume is %d GiB already; it can only grow", q.UserVolumeSizeGib, ws.UserVolumeSizeGib)
		}
		return extra(q.ComputeType == "" && q.RunningMode == "")
	}
	return fmt.Errorf("action %q: one of %s, %s, %s, %s, %s", q.Action, ActionRestart, ActionIncreaseVolume, ActionChangeComputeType, ActionSwitchRunningMode, ActionRebuild)
}

func (b *Broker) serveSelfService(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "self-service takes POST only", http.StatusMethodNotAllowed)
		return
	}
	// JSON only: a form post from another site cannot carry it (and the cookie is
	// SameSite=Strict besides).
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	answer := func(code int, res SelfServiceResult) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(res)
	}
	var q SelfServiceRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil || dec.Decode(&struct{}{}) != io.EOF {
		if err == nil {
			err = errors.New("more than one JSON value")
		}
		answer(http.StatusBadRequest, SelfServiceResult{Result: ResultInvalid, Message: "bad self-service request: " + err.Error()})
		return
	}
	from := clientAddr(r)
	var sess *session.Session
	var ended session.Ended
	if c, err := r.Cookie(CookieName); err == nil {
		if sess, _ = b.c.Sessions.Get(c.Value, from); sess == nil {
			ended, _ = b.c.Sessions.EndedByTimeout(c.Value)
		}
	}
	if sess == nil || sess.Stage() != session.Authenticated {
		msg := MsgNotAuthed
		if ended.ResumeTimeout > 0 {
			msg = MsgSessionEnded(ended.ResumeTimeout)
		}
		answer(http.StatusUnauthorized, SelfServiceResult{Result: ResultNotAuthed, Message: msg})
		return
	}
	sess.Mu.Lock()
	defer sess.Mu.Unlock()
	b.c.Sessions.Touch(sess)
	code, res, reason := SelfService(r.Context(), b.c.Workspaces, sess, q)
	b.c.Events.Audit("self-service", res.Result, reason, map[string]string{"clientIpAddress": from.String(),
		"directoryId": sess.DirectoryID, "userName": sess.UserName, "workspaceId": res.WorkspaceID, "action": q.Action})
	b.c.Log.Info("broker: self-service", "client", from.String(), "directory", sess.DirectoryID, "user", sess.UserName,
		"workspace", res.WorkspaceID, "action", q.Action, "result", res.Result, "reason", reason)
	answer(code, res)
}

// SelfService decides and does one action for the logged-in session s (the caller holds
// s.Mu): the HTTP status, the answer and the reason (for the audit trail). The broker's
// endpoint and the web client's WorkSpace page both use it.
func SelfService(ctx context.Context, backend workspaces.Backend, s *session.Session, q SelfServiceRequest) (int, SelfServiceResult, string) {
	ss, ok := backend.(workspaces.SelfService)
	if !ok {
		return http.StatusNotImplemented, SelfServiceResult{Result: ResultNotAvailable, Message: "Self-service is not available on this host."}, "backend has no self-service"
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ws, found, err := backend.ForUser(ctx, s.DirectoryID, s.UserName)
	if err != nil {
		return http.StatusBadGateway, SelfServiceResult{Result: ResultFailed, Message: MsgLaunchError}, err.Error()
	}
	if !found {
		return http.StatusNotFound, SelfServiceResult{Result: ResultRefused, Message: MsgNoWorkspace}, "no WorkSpace"
	}
	res := SelfServiceResult{WorkspaceID: ws.ID}
	refuse := func(code int, result, msg, reason string) (int, SelfServiceResult, string) {
		res.Result, res.Message = result, msg
		return code, res, reason
	}
	perm, _, known := permission(q.Action, catalog.SelfServicePermissions{})
	if !known || checkRequest(q, ws) != nil {
		err := checkRequest(q, ws)
		return refuse(http.StatusBadRequest, ResultInvalid, err.Error(), err.Error())
	}
	perms, err := ss.Permissions(ctx, s.DirectoryID)
	if err != nil {
		return refuse(http.StatusBadGateway, ResultFailed, MsgLaunchError, err.Error())
	}
	if _, setting, _ := permission(q.Action, perms); setting != catalog.Enabled {
		return refuse(http.StatusForbidden, ResultForbidden, MsgSelfServiceOff(perm), perm+" is "+string(setting))
	}
	if q.RootVolumeSizeGib > MaxSelfServiceRootGib || q.UserVolumeSizeGib > MaxSelfServiceUserGib {
		return refuse(http.StatusBadRequest, ResultInvalid, MsgVolumeCap, fmt.Sprintf("root %d GiB, user %d GiB", q.RootVolumeSizeGib, q.UserVolumeSizeGib))
	}
	msg := "Your request has been accepted."
	switch q.Action {
	case ActionRebuild:
		var backup time.Time
		var ok bool
		if backup, ok, err = ss.LatestBackup(ctx, ws.ID); err == nil && !ok {
			return refuse(http.StatusConflict, ResultRefused, MsgRebuildTooSoon, "no snapshot yet")
		}
		if err == nil {
			err, msg = ss.Rebuild(ctx, ws.ID), MsgRebuilding(backup)
		}
	case ActionRestart:
		err, msg = ss.Reboot(ctx, ws.ID), MsgRestarted
	case ActionChangeComputeType:
		err, msg = ss.Modify(ctx, ws.ID, workspaces.Change{ComputeType: q.ComputeType}), MsgCompute
	case ActionSwitchRunningMode:
		err = ss.Modify(ctx, ws.ID, workspaces.Change{RunningMode: q.RunningMode})
	case ActionIncreaseVolume:
		err = ss.Modify(ctx, ws.ID, workspaces.Change{RootVolumeSizeGib: q.RootVolumeSizeGib, UserVolumeSizeGib: q.UserVolumeSizeGib})
	}
	if err != nil {
		var ce *catalog.Error
		var re *workspaces.RequestError
		switch {
		case errors.As(err, &ce):
			return refuse(http.StatusConflict, ResultRefused, ce.Message, err.Error())
		case errors.As(err, &re):
			return refuse(http.StatusConflict, ResultRefused, re.Message, err.Error())
		}
		return refuse(http.StatusBadGateway, ResultFailed, MsgLaunchError, err.Error())
	}
	s.Lookup = nil // the WorkSpace is changing
	res.Result, res.Message = ResultAccepted, msg
	return http.StatusOK, res, ""
}
