// Package apierr holds the errors hostd's operations return, typed with the exception names
// of AWS's WorkSpaces API so that the admin API can hand them to AWS tools unchanged.
package apierr

import (
	"errors"
	"fmt"
)

// Type is an AWS WorkSpaces exception name.
type Type string

const (
	InvalidParameterValues      Type = "InvalidParameterValuesException"
	InvalidResourceState        Type = "InvalidResourceStateException"
	ResourceNotFound            Type = "ResourceNotFoundException"
	ResourceLimitExceeded       Type = "ResourceLimitExceededException"
	ResourceAlreadyExists       Type = "ResourceAlreadyExistsException"
	ResourceUnavailable         Type = "ResourceUnavailableException"
	OperationNotSupported       Type = "OperationNotSupportedException"
	OperationInProgress         Type = "OperationInProgressException"
	UnsupportedWorkspaceConfig  Type = "UnsupportedWorkspaceConfigurationException"
	AccessDenied                Type = "AccessDeniedException"
	Throttling                  Type = "ThrottlingException"
	Validation                  Type = "ValidationException"
	UnrecognizedClient          Type = "UnrecognizedClientException"
	InvalidSignature            Type = "InvalidSignatureException"
	IncompleteSignature         Type = "IncompleteSignatureException"
	MissingAuthenticationToken  Type = "MissingAuthenticationTokenException"
	UnknownOperation            Type = "UnknownOperationException"
	SerializationError          Type = "SerializationException"
	RequestEntityTooLarge       Type = "RequestEntityTooLargeException"
	InternalFailure             Type = "InternalFailure"
	ServiceUnavailableException Type = "ServiceUnavailableException"
)

// Error is an operation's refusal: a type a client can act on and a message a person can read.
type Error struct {
	Type    Type
	Message string
}

func (e *Error) Error() string { return string(e.Type) + ": " + e.Message }

// New makes an Error with a formatted message.
func New(t Type, format string, args ...any) *Error {
	return &Error{Type: t, Message: fmt.Sprintf(format, args...)}
}

// As returns err's *Error if it is one, or an InternalFailure wrapping err's text.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Type: InternalFailure, Message: err.Error()}
}

// Is reports whether err is an *Error of type t.
func Is(err error, t Type) bool {
	var e *Error
	return errors.As(err, &e) && e.Type == t
}
