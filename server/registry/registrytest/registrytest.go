// Package registrytest gives tests a PostgreSQL database of their own: a
// fresh schema of the test database, dropped when the test ends, so tests
// run in parallel without seeing each other's rows.
package registrytest

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// DatabaseURL returns CASARE_TEST_DATABASE_URL pointed at a new schema. With
// the variable unset it skips the test, or fails it when CI is set: CI must
// not pass by skipping what it was meant to check.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("CASARE_TEST_DATABASE_URL")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CASARE_TEST_DATABASE_URL is not set; CI needs PostgreSQL")
		}
		t.Skip("CASARE_TEST_DATABASE_URL is not set")
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	schema := fmt.Sprintf("test_%d", rand.Uint64())
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() { db.Exec("DROP SCHEMA " + schema + " CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("CASARE_TEST_DATABASE_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
