package hostdclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/smithy-go"

	"deskhost/internal/catalog"
)

// X-Amz-Target prefixes: AWS's WorkSpaces operations (hostd's own ReportConnections has
// it too), and hostd's own operations that are not AWS's.
const (
	WorkspacesTarget = "WorkspacesService."
	DeskhostTarget   = "Deskhost."
)

// contentType is AWS JSON 1.1's.
const contentType = "application/x-amz-json-1.1"

// maxResponse bounds a response body read into memory.
const maxResponse = 64 << 20

// Call makes one of hostd's own operations, those AWS's SDK does not know: target is its
// X-Amz-Target (prefix and name), in is sent as the JSON request, and out (a pointer, or
// nil) receives the JSON response. It is signed as the SDK signs (not on the socket), and
// throttled or transiently failed calls are retried as the SDK retries its own. A refusal
// is an *APIError. A typed method for a new operation is a request and response type and
// three lines calling Call (see ReportConnections).
func (c *Client) Call(ctx context.Context, target string, in, out any) error {
	op := target[strings.LastIndexByte(target, '.')+1:]
	body, err := json.Marshal(in)
	if err != nil {
		return &smithy.OperationError{ServiceID: workspaces.ServiceID, OperationName: op, Err: fmt.Errorf("encode request: %w", err)}
	}
	for attempt := 1; ; attempt++ {
		err = c.do(ctx, target, op, body, out)
		if err == nil {
			return nil
		}
		if attempt >= c.retryer.MaxAttempts() || !c.retryer.IsErrorRetryable(err) {
			break
		}
		delay, derr := c.retryer.RetryDelay(attempt, err)
		if derr != nil {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return &smithy.OperationError{ServiceID: workspaces.ServiceID, OperationName: op, Err: ctx.Err()}
		case <-t.C:
		}
	}
	return &smithy.OperationError{ServiceID: workspaces.ServiceID, OperationName: op, Err: err}
}

// do is one attempt of Call.
func (c *Client) do(ctx context.Context, target, op string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", contentType)
	if c.creds != nil {
		creds, err := c.creds.Retrieve(ctx)
		if err != nil {
			return fmt.Errorf("credentials: %w", err)
		}
		sum := sha256.Sum256(body)
		if err := c.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), signingName, c.region, time.Now()); err != nil {
			return fmt.Errorf("sign: %w", err)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return responseError(op, resp, rb)
	}
	if out == nil || len(bytes.TrimSpace(rb)) == 0 {
		return nil
	}
	if err := json.Unmarshal(rb, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// responseError reads an AWS JSON 1.1 error response: {"__type": ..., "message": ...},
// the type perhaps qualified ("namespace#Name"), the header X-Amzn-ErrorType if the body
// says nothing.
func responseError(op string, resp *http.Response, body []byte) *APIError {
	var eb struct {
		Type     string `json:"__type"`
		Message  string `json:"message"`
		MessageU string `json:"Message"`
	}
	_ = json.Unmarshal(body, &eb)
	typ := eb.Type
	if typ == "" {
		typ, _, _ = strings.Cut(resp.Header.Get("X-Amzn-ErrorType"), ":")
	}
	if i := strings.LastIndexByte(typ, '#'); i >= 0 {
		typ = typ[i+1:]
	}
	msg := eb.Message
	if msg == "" {
		msg = eb.MessageU
	}
	if typ == "" {
		typ = string(catalog.InternalFailure)
		if msg == "" {
			msg = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body[:min(len(body), 512)]))
		}
	}
	return &APIError{Err: &catalog.Error{Type: catalog.ErrorType(typ), Message: msg}, Operation: op,
		StatusCode: resp.StatusCode, RequestID: resp.Header.Get("X-Amzn-Requestid")}
}
