package api

import (
	"context"
	"errors"

	"connectrpc.com/connect/v2"

	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// errorCodes is the one table from domain errors to Connect codes. The
// domain error's message is written for people and goes to the client.
var errorCodes = []struct {
	err  error
	code connect.Code
}{
	{registry.ErrNotFound, connect.CodeNotFound},
	{registry.ErrAlreadyExists, connect.CodeAlreadyExists},
	{registry.ErrConflict, connect.CodeFailedPrecondition},
	{registry.ErrInvalidArgument, connect.CodeInvalidArgument},
	{queue.ErrTaskActive, connect.CodeFailedPrecondition},
}

// toConnect converts an error from the layers below to what the client sees.
// A database that cannot serve now is unavailable (HTTP 503), which clients
// retry. Other errors with no entry in errorCodes become "internal error";
// their cause is logged by the Log interceptor and never sent.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) && !cerr.IsRemote() {
		return err
	}
	if errors.Is(err, registry.ErrInvalidPageToken) {
		return invalid("page_token", "not a token from an earlier page of this same list")
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return connect.NewError(e.code, err.Error()).WithCause(err)
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, "request cancelled").WithCause(err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, "deadline exceeded").WithCause(err)
	case registry.Unavailable(err):
		// Retryable: the client tries again, and the cause is logged.
		return connect.NewError(connect.CodeUnavailable, "the database is unavailable now; try again").WithCause(err)
	}
	return connect.NewError(connect.CodeInternal, "internal error").WithCause(err)
}

// invalid returns an InvalidArgument error naming the field at fault.
func invalid(field, format string, args ...any) error {
	return connect.Errorf(connect.CodeInvalidArgument, field+": "+format, args...)
}
