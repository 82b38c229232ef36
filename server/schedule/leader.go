package schedule

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"time"

	"github.com/casarerpa/casare/server/registry"
)

// lockClass is the first key of the scheduler's PostgreSQL advisory lock;
// the second is a hash of the schema, so control planes sharing a
// database in different schemas (tests do) each have a scheduler.
const lockClass = 0x63617372 // "casr"

var (
	tryLockSQL = fmt.Sprintf("SELECT pg_try_advisory_lock(%d, hashtext(current_schema()))", lockClass)
	unlockSQL  = fmt.Sprintf("SELECT pg_advisory_unlock(%d, hashtext(current_schema()))", lockClass)
)

// leader says whether this replica runs the scheduler. On PostgreSQL it
// holds an advisory lock on a connection of its own for as long as it
// leads: if that connection is lost, so is the lock, and another replica
// takes it. On SQLite the one process leads. Only the scheduler's
// goroutine uses it.
type leader struct {
	reg    *registry.Registry
	logger *slog.Logger
	conn   *sql.Conn
}

// lead reports whether this replica leads now, taking the lead when it is
// free and checking that a lead held is still held.
func (l *leader) lead(ctx context.Context) bool {
	if l.reg.Dialect() != "postgres" {
		return true
	}
	check, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if l.conn != nil {
		var one int
		if err := l.conn.QueryRowContext(check, "SELECT 1").Scan(&one); err != nil {
			if ctx.Err() == nil {
				l.logger.Warn("scheduler: lost the connection holding the lead; another replica may take it", "err", err)
			}
			l.discard()
			return false
		}
		return true
	}
	conn, err := l.reg.DB().DB.Conn(check)
	if err != nil {
		if ctx.Err() == nil {
			l.logger.Warn("scheduler: cannot reach the database to take the lead", "err", err)
		}
		return false
	}
	var ok bool
	if err := conn.QueryRowContext(check, tryLockSQL).Scan(&ok); err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			l.logger.Warn("scheduler: cannot take the lead", "err", err)
		}
		conn.Close()
		return false
	}
	l.conn = conn
	l.logger.Info("scheduler: this replica leads")
	return true
}

// release gives the lead up, for another replica to take at once.
func (l *leader) release() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ok bool
	if err := l.conn.QueryRowContext(ctx, unlockSQL).Scan(&ok); err != nil || !ok {
		l.discard()
		return
	}
	l.conn.Close()
	l.conn = nil
	l.logger.Info("scheduler: gave up the lead")
}

// discard closes the lead's connection for good rather than returning it
// to the pool, where a session still holding the lock would keep it.
func (l *leader) discard() {
	l.conn.Raw(func(any) error { return driver.ErrBadConn })
	l.conn.Close()
	l.conn = nil
}
