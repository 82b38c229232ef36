package registry

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"time"
)

// Leader says whether this replica does a piece of work that one replica
// at a time must do (run the scheduler, start queue triggers' jobs). On
// PostgreSQL it holds an advisory lock on a connection of its own for as
// long as it leads: if that connection is lost, so is the lock, and
// another replica takes it. On SQLite the one process leads. One
// goroutine uses a Leader.
type Leader struct {
	reg    *Registry
	what   string
	logger *slog.Logger
	conn   *sql.Conn
	lock   string
	unlock string
}

// NewLeader returns a Leader for the work what (named in its log lines),
// whose lock is class: one class a kind of work. The lock's second key is
// a hash of the schema, so control planes sharing a database in different
// schemas (tests do) each have a leader.
func (r *Registry) NewLeader(class int32, what string, logger *slog.Logger) *Leader {
	return &Leader{
		reg: r, what: what, logger: logger,
		lock:   fmt.Sprintf("SELECT pg_try_advisory_lock(%d, hashtext(current_schema()))", class),
		unlock: fmt.Sprintf("SELECT pg_advisory_unlock(%d, hashtext(current_schema()))", class),
	}
}

// Lead reports whether this replica leads now, taking the lead when it is
// free and checking that a lead held is still held.
func (l *Leader) Lead(ctx context.Context) bool {
	if l.reg.Dialect() != "postgres" {
		return true
	}
	check, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if l.conn != nil {
		var one int
		if err := l.conn.QueryRowContext(check, "SELECT 1").Scan(&one); err != nil {
			if ctx.Err() == nil {
				l.logger.Warn(l.what+": lost the connection holding the lead; another replica may take it", "err", err)
			}
			l.discard()
			return false
		}
		return true
	}
	conn, err := l.reg.DB().DB.Conn(check)
	if err != nil {
		if ctx.Err() == nil {
			l.logger.Warn(l.what+": cannot reach the database to take the lead", "err", err)
		}
		return false
	}
	var ok bool
	if err := conn.QueryRowContext(check, l.lock).Scan(&ok); err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			l.logger.Warn(l.what+": cannot take the lead", "err", err)
		}
		conn.Close()
		return false
	}
	l.conn = conn
	l.logger.Info(l.what + ": this replica leads")
	return true
}

// Release gives the lead up, for another replica to take at once.
func (l *Leader) Release() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ok bool
	if err := l.conn.QueryRowContext(ctx, l.unlock).Scan(&ok); err != nil || !ok {
		l.discard()
		return
	}
	l.conn.Close()
	l.conn = nil
	l.logger.Info(l.what + ": gave up the lead")
}

// discard closes the lead's connection for good rather than returning it
// to the pool, where a session still holding the lock would keep it.
func (l *Leader) discard() {
	l.conn.Raw(func(any) error { return driver.ErrBadConn })
	l.conn.Close()
	l.conn = nil
}
