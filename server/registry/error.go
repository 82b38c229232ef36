package registry

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors callers tell apart with errors.Is.
var (
	// ErrNotFound: no row has the key asked for.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a row with the same unique key exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the row is not in the state the change requires.
	ErrConflict = errors.New("conflict")
	// ErrInvalidPageToken: the page token is damaged or belongs to another
	// query.
	ErrInvalidPageToken = errors.New("invalid page token")
	// ErrUnavailable: the database cannot serve now (down, restarting,
	// unreachable, busy); the same call may succeed later. Unavailable
	// recognises the errors of the drivers as well, unwrapped.
	ErrUnavailable = errors.New("the database is unavailable")
)

// Unavailable reports whether err says the database could not be reached
// or could not serve, as opposed to refusing the statement: the same call
// may succeed once the database is back, so callers retry it and clients
// are told to (Connect's unavailable).
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	// Connecting failed: refused, timed out (a connection was not had
	// within the deadline), or the server said it is starting or stopping.
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return unavailableState(pgErr.Code)
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	// A network error of the connection; context.DeadlineExceeded is a
	// net.Error too, but the caller's deadline says nothing of the database.
	var netErr net.Error
	if errors.As(err, &netErr) && !errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// SQLite's busy and locked: another writer holds the database past the
	// busy timeout. Both drivers put the name in the message.
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "SQLITE_LOCKED") ||
		strings.Contains(msg, "database is locked") || strings.Contains(msg, "database table is locked")
}

// unavailableState reports whether a PostgreSQL SQLSTATE says the server
// cannot serve now rather than that the statement is wrong: connection
// exceptions (class 08), an administrator or crash shutdown, a server
// still starting (57P01, 57P02, 57P03), too many connections (53300).
func unavailableState(code string) bool {
	switch code {
	case "57P01", "57P02", "57P03", "53300":
		return true
	}
	return strings.HasPrefix(code, "08")
}

// isUniqueViolation reports whether err is a unique constraint violation on
// either dialect.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
