// The errors hostd's operations return, typed with the exception names of AWS's WorkSpaces
// API so that the admin API can hand them to AWS tools unchanged.

package catalog

import (
	"errors"
	"fmt"
)

// Type is an AWS WorkSpaces exception name.
type ErrorType string

const (
	InvalidParameterValues      ErrorType = "InvalidParameterValuesException"
	InvalidResourceState        ErrorType = "InvalidResourceStateException"
	ResourceNotFound            ErrorType = "ResourceNotFoundException"
	ResourceLimitExceeded       ErrorType = "ResourceLimitExceededException"
	ResourceAlreadyExists       ErrorType = "ResourceAlreadyExistsException"
	ResourceAssociated          ErrorType = "ResourceAssociatedException"
	ResourceUnavailable         ErrorType = "ResourceUnavailableException"
	OperationNotSupported       ErrorType = "OperationNotSupportedException"
	OperationInProgress         ErrorType = "OperationInProgressException"
	UnsupportedWorkspaceConfig  ErrorType = "UnsupportedWorkspaceConfigurationException"
	AccessDenied                ErrorType = "AccessDeniedException"
	Throttling                  ErrorType = "ThrottlingException"
	Validation                  ErrorType = "ValidationException"
	UnrecognizedClient          ErrorType = "UnrecognizedClientException"
	InvalidSignature            ErrorType = "InvalidSignatureException"
	IncompleteSignature         ErrorType = "IncompleteSignatureException"
	MissingAuthenticationToken  ErrorType = "MissingAuthenticationTokenException"
	UnknownOperation            ErrorType = "UnknownOperationException"
	SerializationError          ErrorType = "SerializationException"
	RequestEntityTooLarge       ErrorType = "RequestEntityTooLargeException"
	InternalFailure             ErrorType = "InternalFailure"
	ServiceUnavailableException ErrorType = "ServiceUnavailableException"
)

// Error is an operation's refusal: a type a client can act on and a message a person can read.
type Error struct {
	Type    ErrorType
	Message string
}

func (e *Error) Error() string { return string(e.Type) + ": " + e.Message }

// New makes an Error with a formatted message.
func Errorf(t ErrorType, format string, args ...any) *Error {
	return &Error{Type: t, Message: fmt.Sprintf(format, args...)}
}

// As returns err's *Error if it is one, or an InternalFailure wrapping err's text.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Type: InternalFailure, Message: err.Error()}
}

// Is reports whether err is an *Error of type t.
func IsError(err error, t ErrorType) bool {
	var e *Error
	return errors.As(err, &e) && e.Type == t
}
