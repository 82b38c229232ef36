// Package migrations holds the database schema as bun migrations, one set
// per dialect, embedded in the binary. The two sets describe the same
// tables; they differ only where PostgreSQL and SQLite spell types and
// identity columns differently.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"

	"github.com/uptrace/bun/migrate"
)

//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// For returns the migrations for a dialect, "postgres" or "sqlite".
func For(dialect string) (*migrate.Migrations, error) {
	if dialect != "postgres" && dialect != "sqlite" {
		return nil, fmt.Errorf("migrations: unknown dialect %q", dialect)
	}
	sub, err := fs.Sub(files, dialect)
	if err != nil {
		return nil, err
	}
	m := migrate.NewMigrations()
	if err := m.Discover(sub); err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return m, nil
}
