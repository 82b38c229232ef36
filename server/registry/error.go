package registry

import (
	"errors"
	"strings"

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
)

// isUniqueViolation reports whether err is a unique constraint violation on
// either dialect.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
