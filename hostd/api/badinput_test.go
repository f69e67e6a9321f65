package api

import (
	"bytes"
	"context"

	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// TestBadInputChangesNothing sends every class of bad input and checks the exact AWS error
// type, a message naming what is wrong, and that the store is exactly as before.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd)}}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("setup: %v %+v", err, out)
	}
	wsID := aws.ToString(out.PendingRequests[0].WorkspaceId)
	e.setState(wsID, "AVAILABLE")

	const (
		create  = "WorkspacesService.CreateWorkspaces"
		desc    = "WorkspacesService.DescribeWorkspaces"
		reboot  = "WorkspacesService.RebootWorkspaces"
		modst   = "WorkspacesService.ModifyWorkspaceState"
		modprop = "WorkspacesService.ModifyWorkspaceProperties"
		term    = "WorkspacesService.TerminateWorkspaces"
	)
	item := func(extra string) string {
		return `{"DirectoryId":"` + dirID + `","UserName":"bob","BundleId":"` + bundleStd + `"` + extra + `}`
	}
	many := func(n int) string {
		var parts []string
		for i := 0; i < n; i++ {
			parts = append(parts, `{"WorkspaceId":"`+wsID+`"}`)
		}
		return `{"RebootWorkspaceRequests":[` + strings.Join(parts, ",") + `]}`
	}
	big := bytes.Repeat([]byte(" "), DefaultMaxBodyBytes+1)
	copy(big, `{"Workspaces":[`+item("")+`]}`)

	for _, tc := range []struct {
		name   string
		call   rawCall
		status int
		typ    string
		msg    string
	}{
		// Malformed JSON and wrong types: SerializationException.
		{"truncated JSON", rawCall{target: create, body: []byte(`{"Workspaces":[` + item(""))}, 400, "SerializationException", "malformed JSON"},
		{"syntax error", rawCall{target: desc, body: []byte(`{"Limit" 5}`)}, 400, "SerializationException", "malformed JSON at byte"},
		{"not an object", rawCall{target: desc, body: []byte(`[1,2]`)}, 400, "SerializationException", "must be a JSON object"},
		{"trailing data", rawCall{target: desc, body: []byte(`{}{}`)}, 400, "SerializationException", "after the request's JSON object"},
		{"invalid UTF-8", rawCall{target: desc, body: []byte("{\"UserName\":\"\xff\"}")}, 400, "SerializationException", "not valid UTF-8"},
		{"string for integer", rawCall{target: desc, body: []byte(`{"Limit":"5"}`)}, 400, "SerializationException", `Limit: expected an integer, got a string "5"`},
		{"fraction for integer", rawCall{target: desc, body: []byte(`{"Limit":1.5}`)}, 400, "SerializationException", "Limit: expected an integer"},
		{"huge integer", rawCall{target: create, body: []byte(`{"Workspaces":[` + item(`,"WorkspaceProperties":{"RootVolumeSizeGib":99999999999}`) + `]}`)},
			400, "SerializationException", "Workspaces[0].WorkspaceProperties.RootVolumeSizeGib: expected an integer"},
		{"number for string", rawCall{target: create, body: []byte(`{"Workspaces":[{"DirectoryId":"` + dirID + `","UserName":42,"BundleId":"` + bundleStd + `"}]}`)},
			400, "SerializationException", "Workspaces[0].UserName: expected a string, got a number 42"},
		{"object for list", rawCall{target: reboot, body: []byte(`{"RebootWorkspaceRequests":{"WorkspaceId":"` + wsID + `"}}`)},
			400, "SerializationException", "RebootWorkspaceRequests: expected an array of RebootRequest objects, got an object"},
		{"string for boolean", rawCall{target: create, body: []byte(`{"Workspaces":[` + item(`,"RootVolumeEncryptionEnabled":"false"`) + `]}`)},
			400, "SerializationException", "Workspaces[0].RootVolumeEncryptionEnabled: expected a boolean"},
		{"null in a list", rawCall{target: desc, body: []byte(`{"WorkspaceIds":[null]}`)}, 400, "SerializationException", "WorkspaceIds[0]: null is not allowed"},
		// Unknown members: SerializationException naming the member.
		{"unknown member", rawCall{target: create, body: []byte(`{"Workspaces":[` + item(`,"Colour":"red"`) + `]}`)},
			400, "SerializationException", `unknown member "Workspaces[0].Colour" in Workspaces[0]; a WorkspaceRequest has DirectoryId, UserName`},
		{"unknown top-level member", rawCall{target: desc, body: []byte(`{"Filter":"x"}`)}, 400, "SerializationException", `unknown member "Filter" in the request`},
		{"member in the wrong case", rawCall{target: create, body: []byte(`{"workspaces":[` + item("") + `]}`)},
			400, "SerializationException", "case-sensitive: did you mean Workspaces?"},
		{"member twice", rawCall{target: modst, body: []byte(`{"WorkspaceId":"` + wsID + `","WorkspaceState":"AVAILABLE","WorkspaceState":"ADMIN_MAINTENANCE"}`)},
			400, "SerializationException", "WorkspaceState appears more than once"},
		// The operation: UnknownOperationException.
		{"no target", rawCall{target: "-", body: []byte(`{}`)}, 400, "UnknownOperationException", "missing X-Amz-Target"},
		{"garbled target", rawCall{target: "DescribeWorkspaces", body: []byte(`{}`)}, 400, "UnknownOperationException", "is not WorkspacesService.<Operation>"},
		{"unknown operation", rawCall{target: "WorkspacesService.LaunchMissiles", body: []byte(`{}`)}, 400, "UnknownOperationException", `"LaunchMissiles" is not one this host implements`},
		{"unimplemented AWS operation", rawCall{target: "WorkspacesService.CreateConnectionAlias", body: []byte(`{}`)}, 400, "UnknownOperationException", "CreateConnectionAlias"},
		{"migrate without a bundle", rawCall{target: "WorkspacesService.MigrateWorkspace", body: []byte(`{"SourceWorkspaceId":"ws-doesnotexist"}`)},
			400, "InvalidParameterValuesException", "missing required member BundleId"},
		{"migrate an unknown WorkSpace", rawCall{target: "WorkspacesService.MigrateWorkspace", body: []byte(`{"SourceWorkspaceId":"ws-doesnotexist","BundleId":"wsb-standard01"}`)},
			400, "ResourceNotFoundException", "WorkSpace ws-doesnotexist does not exist"},
		// Method, path, content type.
		{"GET", rawCall{method: http.MethodGet, target: desc}, 405, "UnknownOperationException", "method \"GET\""},
		{"wrong path", rawCall{path: "/v1/workspaces", target: desc, body: []byte(`{}`)}, 404, "UnknownOperationException", `path "/v1/workspaces"`},
		{"wrong content type", rawCall{target: desc, contentType: "application/json", body: []byte(`{}`)}, 400, "SerializationException", "application/x-amz-json-1.1"},
		// Missing required members and out-of-range values: InvalidParameterValuesException.
		{"missing Workspaces", rawCall{target: create, body: []byte(`{}`)}, 400, "InvalidParameterValuesException", "missing required member Workspaces"},
		{"null required member", rawCall{target: create, body: []byte(`{"Workspaces":null}`)}, 400, "InvalidParameterValuesException", "missing required member Workspaces"},
		{"missing BundleId", rawCall{target: create, body: []byte(`{"Workspaces":[{"DirectoryId":"` + dirID + `","UserName":"bob"}]}`)},
			400, "InvalidParameterValuesException", "missing required member Workspaces[0].BundleId"},
		{"missing WorkspaceState", rawCall{target: modst, body: []byte(`{"WorkspaceId":"` + wsID + `"}`)}, 400, "InvalidParameterValuesException", "missing required member WorkspaceState"},
		{"empty list", rawCall{target: create, body: []byte(`{"Workspaces":[]}`)}, 400, "InvalidParameterValuesException", "Workspaces lists 0 items; it needs at least 1"},
		{"26 items", rawCall{target: reboot, body: []byte(many(26))}, 400, "InvalidParameterValuesException", "RebootWorkspaceRequests lists 26 items; at most 25"},
		{"Limit too big", rawCall{target: desc, body: []byte(`{"Limit":26}`)}, 400, "InvalidParameterValuesException", "Limit is 26; it must be at most 25"},
		{"Limit zero", rawCall{target: desc, body: []byte(`{"Limit":0}`)}, 400, "InvalidParameterValuesException", "Limit is 0; it must be at least 1"},
		{"bad directory id", rawCall{target: create, body: []byte(`{"Workspaces":[{"DirectoryId":"d-XYZ","UserName":"bob","BundleId":"` + bundleStd + `"}]}`)},
			400, "InvalidParameterValuesException", `Workspaces[0].DirectoryId "d-XYZ" is 5 characters; it must be at least 10`},
		{"bad workspace id", rawCall{target: term, body: []byte(`{"TerminateWorkspaceRequests":[{"WorkspaceId":"ws-UPPERCASE1"}]}`)},
			400, "InvalidParameterValuesException", `TerminateWorkspaceRequests[0].WorkspaceId "ws-UPPERCASE1" does not match ^ws-[0-9a-z]{8,63}$`},
		{"user name too long", rawCall{target: create, body: []byte(`{"Workspaces":[{"DirectoryId":"` + dirID + `","UserName":"` + strings.Repeat("x", 64) + `","BundleId":"` + bundleStd + `"}]}`)},
			400, "InvalidParameterValuesException", "is 64 characters; it must be at most 63"},
		{"bad enum", rawCall{target: modst, body: []byte(`{"WorkspaceId":"` + wsID + `","WorkspaceState":"STOPPED"}`)},
			400, "InvalidParameterValuesException", `WorkspaceState "STOPPED" must be one of AVAILABLE, ADMIN_MAINTENANCE`},
		{"bad running mode", rawCall{target: modprop, body: []byte(`{"WorkspaceId":"` + wsID + `","WorkspaceProperties":{"RunningMode":"SOMETIMES"}}`)},
			400, "InvalidParameterValuesException", `WorkspaceProperties.RunningMode "SOMETIMES" must be one of`},
		{"nothing to modify", rawCall{target: modprop, body: []byte(`{"WorkspaceId":"` + wsID + `","WorkspaceProperties":{}}`)},
			400, "InvalidParameterValuesException", "names no property to change"},
		{"AutoStop time not whole hours", rawCall{target: modprop, body: []byte(`{"WorkspaceId":"` + wsID + `","WorkspaceProperties":{"RunningMode":"AUTO_STOP","RunningModeAutoStopTimeoutInMinutes":61}}`)},
			400, "InvalidParameterValuesException", "whole number of hours"},
		{"two filters", rawCall{target: desc, body: []byte(`{"DirectoryId":"` + dirID + `","BundleId":"` + bundleStd + `"}`)},
			400, "InvalidParameterValuesException", "give only one of WorkspaceIds, DirectoryId and BundleId"},
		{"foreign NextToken", rawCall{target: desc, body: []byte(`{"NextToken":"abc"}`)}, 400, "InvalidParameterValuesException", "NextToken"},
		{"stop without id", rawCall{target: "WorkspacesService.StopWorkspaces", body: []byte(`{"StopWorkspaceRequests":[{}]}`)},
			400, "InvalidParameterValuesException", "missing required member StopWorkspaceRequests[0].WorkspaceId"},
		// Unknown resources: ResourceNotFoundException from the service.
		{"unknown WorkSpace", rawCall{target: modst, body: []byte(`{"WorkspaceId":"ws-doesnotexist","WorkspaceState":"ADMIN_MAINTENANCE"}`)},
			400, "ResourceNotFoundException", "WorkSpace ws-doesnotexist does not exist"},
		{"unknown WorkSpace (properties)", rawCall{target: modprop, body: []byte(`{"WorkspaceId":"ws-doesnotexist","WorkspaceProperties":{"RunningMode":"AUTO_STOP"}}`)},
			400, "ResourceNotFoundException", "WorkSpace ws-doesnotexist does not exist"},
		// Size.
		{"body over 1 MiB", rawCall{target: create, body: big}, 413, "RequestEntityTooLargeException", "larger than 1048576 bytes"},
		{"body over 1 MiB, no length", rawCall{target: create, body: big, chunked: true}, 413, "RequestEntityTooLargeException", "larger than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, wakes := e.snapshot(), len(e.waker.calls())
			r := e.raw(tc.call)
			if r.status != tc.status || r.errType != tc.typ || !strings.Contains(r.message, tc.msg) {
				t.Errorf("got %d %s %q\nwant %d %s containing %q", r.status, r.errType, r.message, tc.status, tc.typ, tc.msg)
			}
			if after := e.snapshot(); !reflect.DeepEqual(before, after) {
				t.Errorf("the store changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if n := len(e.waker.calls()); n != wakes {
				t.Errorf("the controller was woken (%d → %d calls)", wakes, n)
			}
		})
	}

	// Per-item refusals change nothing either: a create whose only item names an unknown
	// bundle, directory or user adds no record.
	before := e.snapshot()
	out, err = c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("bob"), BundleId: aws.String("wsb-nosuchbndl")},
		{DirectoryId: aws.String("d-ffffffffff"), UserName: aws.String("bob"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("mallory"), BundleId: aws.String(bundleStd)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range out.FailedRequests {
		if aws.ToString(f.ErrorCode) != "ResourceNotFoundException" {
			t.Errorf("failure %d: %s %s", i, aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage))
		}
	}
	if len(out.FailedRequests) != 3 || len(out.PendingRequests) != 0 {
		t.Errorf("got %d failed, %d pending", len(out.FailedRequests), len(out.PendingRequests))
	}
	if after := e.snapshot(); !reflect.DeepEqual(before, after) {
		t.Errorf("refused creates changed the store")
	}

	// The SDK's own view of a few of these: the error type arrives as the error code.
	_, err = c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{DirectoryId: aws.String(dirID), BundleId: aws.String(bundleStd)})
	apiErr(t, err, "InvalidParameterValuesException")
	_, err = c.ModifyWorkspaceState(ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: aws.String(wsID), WorkspaceState: "BROKEN"})
	if ae := apiErr(t, err, "InvalidParameterValuesException"); !strings.Contains(ae.ErrorMessage(), `"BROKEN"`) {
		t.Errorf("message %q", ae.ErrorMessage())
	}
}
