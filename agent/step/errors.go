package step

import (
	"errors"
	"fmt"
)

// Error is a step failure. Business errors say the data was wrong (a
// missing parameter, a file that does not exist, an assertion that does not
// hold): running again cannot help, so retry never repeats them. Every other
// error is an application error (the system failed: a timeout, a refused
// connection) and retry applies.
type Error struct {
	Message  string
	Business bool
	Err      error
}

func (e *Error) Error() string { return e.Message }

func (e *Error) Unwrap() error { return e.Err }

// Businessf returns a business error: the data was wrong, never retried.
func Businessf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Message: err.Error(), Business: true, Err: errors.Unwrap(err)}
}

// Failf returns an application error: the system failed, retry may help.
func Failf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Message: err.Error(), Err: errors.Unwrap(err)}
}

// IsBusiness reports whether err is a business error. Errors that are not
// *Error are application errors.
func IsBusiness(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Business
}
