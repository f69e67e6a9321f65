package hostdclient

import (
	"context"
	"errors"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"deskhost/internal/catalog"
)

// APIError is hostd's refusal of a call: its exception name and message (AWS JSON 1.1's
// __type and message) as a *catalog.Error, so callers branch with catalog.IsError or
// errors.As. It is also a smithy.APIError, and for AWS's operations errors.As still finds
// the SDK's own typed exception (e.g. *types.ResourceNotFoundException) beneath it.
type APIError struct {
	Err        *catalog.Error
	Operation  string
	StatusCode int
	RequestID  string
	sdk        error // the SDK's error for the same response, if the SDK made the call
}

func (e *APIError) Error() string { return e.Err.Error() }

// Unwrap gives the *catalog.Error and, for AWS's operations, the SDK's error.
func (e *APIError) Unwrap() []error {
	if e.sdk != nil {
		return []error{e.Err, e.sdk}
	}
	return []error{e.Err}
}

// ErrorCode, ErrorMessage and ErrorFault make an APIError a smithy.APIError.
func (e *APIError) ErrorCode() string    { return string(e.Err.Type) }
func (e *APIError) ErrorMessage() string { return e.Err.Message }
func (e *APIError) ErrorFault() smithy.ErrorFault {
	if e.StatusCode >= 500 {
		return smithy.FaultServer
	}
	return smithy.FaultClient
}

// HTTPStatusCode lets the SDK's retry rules judge an APIError by its status too.
func (e *APIError) HTTPStatusCode() int { return e.StatusCode }

// fromSDK turns the SDK's error for a response hostd refused into an *APIError; any other
// error (a connection that failed, a cancelled context) is returned as it is.
func fromSDK(op string, err error) error {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return err
	}
	if _, ok := ae.(*APIError); ok {
		return err
	}
	e := &APIError{Err: &catalog.Error{Type: catalog.ErrorType(ae.ErrorCode()), Message: ae.ErrorMessage()}, Operation: op, sdk: err}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		e.StatusCode, e.RequestID = re.HTTPStatusCode(), re.ServiceRequestID()
	}
	if e.StatusCode == 0 {
		e.StatusCode = http.StatusBadRequest
	}
	return e
}

type middlewareStack = middleware.Stack

// addErrorMiddleware wraps the SDK's errors as APIErrors. It runs first in the stack, so
// around the SDK's retries: those see the SDK's own errors.
func addErrorMiddleware(s *middleware.Stack) error {
	return s.Initialize.Add(middleware.InitializeMiddlewareFunc("hostdclient.APIError",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if err != nil {
				err = fromSDK(middleware.GetOperationName(ctx), err)
			}
			return out, md, err
		}), middleware.Before)
}
