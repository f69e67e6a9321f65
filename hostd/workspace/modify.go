package workspace

import (
	"time"

	"deskhost/internal/catalog"
)

// Compute and volume changes (guide catalog §3.1, §3.2, §2.8, §31.12–14): ModifyWorkspaceProperties
// may change a WorkSpace's compute type or grow one of its volumes, within the guide's
// groups and rate limits. While a change runs the WorkSpace is UPDATING and
// DescribeWorkspaces lists it in ModificationStates (the console's "Modifying Compute" or
// "Modifying Storage").

// Resource is what a modification changes (AWS's ModificationResourceEnum).
type Resource string

const (
	ResourceRootVolume  Resource = "ROOT_VOLUME"
	ResourceUserVolume  Resource = "USER_VOLUME"
	ResourceComputeType Resource = "COMPUTE_TYPE"
)

// UpdateInProgress is AWS's ModificationStateEnum for a change that runs.
const UpdateInProgress = "UPDATE_IN_PROGRESS"

// The guide's modification states (the console's names).
const (
	ModifyingCompute = "MODIFYING_COMPUTE"
	ModifyingStorage = "MODIFYING_STORAGE"
	ModifyingNone    = "NONE"
)

// The guide's waits.
const (
	// LaunchWait: "When you launch a WorkSpace, you must wait 6 hours before you can modify
	// the sizes of its volumes"; "For a newly launched WorkSpace, you must wait 6 hours
	// before requesting a larger bundle."
	LaunchWait = 6 * time.Hour
	// UpsizeInterval: "You can request a larger bundle once in a 6-hour period".
	UpsizeInterval = 6 * time.Hour
	// DownsizeInterval: "or a smaller bundle once every 30 days".
	DownsizeInterval = 30 * 24 * time.Hour
	// VolumeInterval: "you can expand both volumes once in a 6-hour period".
	VolumeInterval = 6 * time.Hour
)

// Modification is the compute or storage change a WorkSpace is UPDATING for: the
// controller applies it, then returns the WorkSpace to Return.
type Modification struct {
	Resource Resource `json:"resource,omitempty"`
	// Return is the state the WorkSpace was in (AVAILABLE, UNHEALTHY or STOPPED), to which
	// it returns once the change is made.
	Return State `json:"return,omitempty"`
	// SizeGib is a volume's new size.
	SizeGib int `json:"sizeGib,omitempty"`
}

// Active reports whether a change runs.
func (m Modification) Active() bool { return m.Resource != "" }

// Name is the guide's modification state: MODIFYING_COMPUTE, MODIFYING_STORAGE or NONE.
func (m Modification) Name() string {
	switch m.Resource {
	case "":
		return ModifyingNone
	case ResourceComputeType:
		return ModifyingCompute
	}
	return ModifyingStorage
}

// ChangeTimes are when a WorkSpace's compute type and volumes last changed: the guide's
// rate limits count from them, so they live in the record and survive restarts.
type ChangeTimes struct {
	ComputeUp   time.Time `json:"computeUp,omitzero"`
	ComputeDown time.Time `json:"computeDown,omitzero"`
	RootGrown   time.Time `json:"rootGrown,omitzero"`
	UserGrown   time.Time `json:"userGrown,omitzero"`
}

// computeRank orders the compute types a WorkSpace may switch between: "You can switch a
// WorkSpace between the Value, Standard, Performance, Power, and PowerPro bundles."
var computeRank = map[catalog.ComputeType]int{
	catalog.ComputeValue: 1, catalog.ComputeStandard: 2, catalog.ComputePerformance: 3,
	catalog.ComputePower: 4, catalog.ComputePowerPro: 5,
}

// Guide texts used in refusals.
const (
	MsgComputeLaunchWait = "For a newly launched WorkSpace, you must wait 6 hours before requesting a larger bundle."
	MsgComputeRate       = "You can request a larger bundle once in a 6-hour period or a smaller bundle once every 30 days."
	MsgComputeFamily     = "You can switch a WorkSpace between the Value, Standard, Performance, Power, and PowerPro bundles; moving to or from Graphics and GraphicsPro is done by migrating the WorkSpace."
	MsgVolumeLaunchWait  = "When you launch a WorkSpace, you must wait 6 hours before you can modify the sizes of its volumes."
	MsgVolumeRate        = "You can expand both volumes once in a 6-hour period."
	MsgVolumeBoth        = "You can't increase the size of the root and user volumes at the same time."
	MsgVolumeShrink      = "To ensure that your data is preserved, you cannot decrease the size of the root or user volumes after you launch a WorkSpace."
	MsgVolumeRootFirst   = "To increase the root volume, you must first change the user volume to 100 GB. After that change is made, you can then update the root volume to any value between 175 and 2000 GB."
	MsgVolumeUser50      = "If the user volume is 50 GB, you cannot update the root volume to anything other than 80 GB."
	MsgVolumeRoot80      = "If the root volume is 80 GB, the user volume can only be 10, 50, or 100 GB."
	// MsgWhileModifying is the guide's self-service rule (catalog §11), which holds for
	// every change: "While it is in progress, users cannot change their WorkSpace compute
	// type, switch their WorkSpace running mode, restart their WorkSpace, or rebuild their
	// WorkSpace."
	MsgWhileModifying = "While a volume increase or compute type change is in progress, the WorkSpace's compute type cannot change, its running mode cannot switch, and it cannot be restarted or rebuilt."
	MsgVolumeGroups   = "WorkSpace root and user volumes come in set groups that can't be changed. The available groups are: [Root (GB), User (GB)] [80, 10] [80, 50] [80, 100] [175 to 2000, 100 to 2000]."
)

// CheckCompute decides whether w (created at w.Created, last changed per w.Changes) may
// move to compute type to at now, and whether that is a larger bundle. hw is the host's
// hardware per compute type.
func CheckCompute(w *Workspace, to catalog.ComputeType, hw map[catalog.ComputeType]catalog.Hardware, now time.Time) (larger bool, err error) {
	from := catalog.ComputeType(w.Properties.ComputeTypeName)
	if !to.Known() {
		return false, catalog.Errorf(catalog.InvalidParameterValues, "ComputeTypeName %q is not one of %v", to, catalog.KnownComputeTypes)
	}
	rf, okf := computeRank[from]
	rt, okt := computeRank[to]
	if !okf || !okt {
		return false, catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s cannot change from %s to %s: %s", w.ID, from, to, MsgComputeFamily)
	}
	if _, ok := hw[to]; !ok {
		return false, catalog.Errorf(catalog.ResourceUnavailable, "compute type %s has no hardware on this host", to)
	}
	if now.Sub(w.Created) < LaunchWait {
		return false, catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s was launched %s ago. %s",
			w.ID, now.Sub(w.Created).Truncate(time.Minute), MsgComputeLaunchWait)
	}
	larger = rt > rf
	last, limit := w.Changes.ComputeDown, DownsizeInterval
	if larger {
		last, limit = w.Changes.ComputeUp, UpsizeInterval
	}
	if !last.IsZero() && now.Sub(last) < limit {
		kind := "smaller"
		if larger {
			kind = "larger"
		}
		return larger, catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s moved to a %s bundle at %s; the next is possible from %s. %s",
			w.ID, kind, last.UTC().Format(time.RFC3339), last.Add(limit).UTC().Format(time.RFC3339), MsgComputeRate)
	}
	return larger, nil
}

// CheckVolumes decides whether w's volumes may become root, user GiB at now: exactly one
// volume grows, into one of the guide's groups, along the guide's path, at most once per
// volume in VolumeInterval and not within LaunchWait of the launch. It returns the volume
// that grows.
func CheckVolumes(w *Workspace, root, user int, now time.Time) (Resource, error) {
	p := w.Properties
	rootChanged, userChanged := root != p.RootVolumeSizeGib, user != p.UserVolumeSizeGib
	switch {
	case root <= 0 || user <= 0:
		return "", catalog.Errorf(catalog.InvalidParameterValues, "volume sizes root %d GB, user %d GB: sizes are positive numbers of GB", root, user)
	case rootChanged && userChanged:
		return "", catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s: root %d→%d GB and user %d→%d GB in one request. %s",
			w.ID, p.RootVolumeSizeGib, root, p.UserVolumeSizeGib, user, MsgVolumeBoth)
	case !rootChanged && !userChanged:
		return "", nil
	case root < p.RootVolumeSizeGib || user < p.UserVolumeSizeGib:
		return "", catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s has root %d GB and user %d GB; asked for root %d GB and user %d GB. %s",
			w.ID, p.RootVolumeSizeGib, p.UserVolumeSizeGib, root, user, MsgVolumeShrink)
	case root > catalog.MaxVolumeGiB || user > catalog.MaxVolumeGiB:
		return "", catalog.Errorf(catalog.InvalidParameterValues, "volume sizes root %d GB, user %d GB: each volume can be at most %d GB", root, user, catalog.MaxVolumeGiB)
	}
	ct := catalog.ComputeType(p.ComputeTypeName)
	if !ct.GPU() {
		switch {
		case rootChanged && p.UserVolumeSizeGib == 50:
			return "", catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s: root %d GB. %s", w.ID, root, MsgVolumeUser50)
		case rootChanged && p.UserVolumeSizeGib < 100:
			return "", catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s: root %d GB with a %d GB user volume. %s", w.ID, root, p.UserVolumeSizeGib, MsgVolumeRootFirst)
		case userChanged && root == 80 && user != 10 && user != 50 && user != 100:
			return "", catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s: user %d GB. %s", w.ID, user, MsgVolumeRoot80)
		}
	}
	if err := catalog.ValidateVolumes(ct, root, user); err != nil {
		return "", catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s: root %d GB, user %d GB. %s", w.ID, root, user, MsgVolumeGroups)
	}
	if now.Sub(w.Created) < LaunchWait {
		return "", catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s was launched %s ago. %s",
			w.ID, now.Sub(w.Created).Truncate(time.Minute), MsgVolumeLaunchWait)
	}
	res, last := ResourceUserVolume, w.Changes.UserGrown
	if rootChanged {
		res, last = ResourceRootVolume, w.Changes.RootGrown
	}
	if !last.IsZero() && now.Sub(last) < VolumeInterval {
		return "", catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s's %s grew at %s; it can grow again from %s. %s",
			w.ID, res, last.UTC().Format(time.RFC3339), last.Add(VolumeInterval).UTC().Format(time.RFC3339), MsgVolumeRate)
	}
	return res, nil
}

// Modify applies a ModifyWorkspaceProperties request to w at now. A running-mode change
// applies at once. A compute type or volume change is checked against the guide's rules;
// unless nothing needs doing on the host (a new compute type for a powered-off guest, which
// every boot defines afresh), w becomes UPDATING with the change as its Modification, and
// the controller makes it. hw is the host's hardware per compute type.
func (w *Workspace) Modify(c PropertiesChange, hw map[catalog.ComputeType]catalog.Hardware, now time.Time) error {
	computeChange := c.ComputeTypeName != nil && *c.ComputeTypeName != w.Properties.ComputeTypeName
	root, user := w.Properties.RootVolumeSizeGib, w.Properties.UserVolumeSizeGib
	if c.RootVolumeSizeGib != nil {
		root = *c.RootVolumeSizeGib
	}
	if c.UserVolumeSizeGib != nil {
		user = *c.UserVolumeSizeGib
	}
	volumeChange := root != w.Properties.RootVolumeSizeGib || user != w.Properties.UserVolumeSizeGib
	if !computeChange && !volumeChange {
		if err := w.CheckOp(OpModifyProperties); err != nil {
			return err
		}
		p, err := c.Apply(w)
		if err != nil {
			return err
		}
		w.Properties = p
		w.Updated = now
		if w.State == Stopped && p.RunningMode == AlwaysOn {
			w.SetState(Starting, now)
		}
		return nil
	}
	if computeChange && volumeChange {
		return catalog.Errorf(catalog.InvalidParameterValues,
			"WorkSpace %s: change the compute type and the volume sizes in separate requests; one modification runs at a time", w.ID)
	}
	if w.State == Updating && w.Modification.Active() {
		return catalog.Errorf(catalog.OperationInProgress, "WorkSpace %s is %s (%s); one modification runs at a time",
			w.ID, w.Modification.Name(), w.Modification.Resource)
	}
	op := OpModifyCompute
	if volumeChange {
		op = OpModifyVolumes
	}
	if err := w.CheckOp(op); err != nil {
		return err
	}
	p, err := c.Apply(w) // the running mode, if it changes too
	if err != nil {
		return err
	}
	var m Modification
	if computeChange {
		to := catalog.ComputeType(*c.ComputeTypeName)
		larger, err := CheckCompute(w, to, hw, now)
		if err != nil {
			return err
		}
		p.ComputeTypeName = string(to)
		if larger {
			w.Changes.ComputeUp = now
		} else {
			w.Changes.ComputeDown = now
		}
		m.Resource = ResourceComputeType
	} else {
		res, err := CheckVolumes(w, root, user, now)
		if err != nil {
			return err
		}
		p.RootVolumeSizeGib, p.UserVolumeSizeGib = root, user
		m.Resource, m.SizeGib = res, user
		if res == ResourceRootVolume {
			w.Changes.RootGrown = now
			m.SizeGib = root
		} else {
			w.Changes.UserGrown = now
		}
	}
	w.Properties = p
	w.Updated = now
	// A STOPPED WorkSpace switched to ALWAYS_ON in the same request starts once the change
	// is made, as a switch alone starts it.
	start := w.State == Stopped && c.RunningMode != nil && *c.RunningMode == AlwaysOn
	if w.State == Stopped && !w.Hibernated && m.Resource == ResourceComputeType {
		if start {
			w.SetState(Starting, now)
		}
		return nil // the next boot defines the domain with the new hardware
	}
	m.Return = Available
	if w.State == Stopped && !start {
		m.Return = Stopped
	}
	w.Modification = m
	w.SetState(Updating, now)
	return nil
}
