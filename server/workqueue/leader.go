package workqueue

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"time"

	"github.com/casarerpa/casare/server/registry"
)

// lockClass is the first key of the queue triggers' PostgreSQL advisory
// lock (the scheduler's is "casr"); the second is a hash of the schema, so
// control planes sharing a database in different schemas each have one.
const lockClass = 0x63617371 // "casq"

var (
	tryLockSQL = fmt.Sprintf("SELECT pg_try_advisory_lock(%d, hashtext(current_schema()))", lockClass)
	unlockSQL  = fmt.Sprintf("SELECT pg_advisory_unlock(%d, hashtext(current_schema()))", lockClass)
)

// leader says whether this replica starts the queue triggers' jobs, so two
// replicas never both start jobs for one queue's items. On PostgreSQL it
// holds an advisory lock on a connection of its own while it leads; losing
// the connection loses the lock for another replica to take. On SQLite the
// one process leads. Only the triggers' goroutine uses it.
type leader struct {
	reg    *registry.Registry
	logger *slog.Logger
	conn   *sql.Conn
}

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
				l.logger.Warn("queue triggers: lost the connection holding the lead; another replica may take it", "err", err)
			}
			l.discard()
			return false
		}
		return true
	}
	conn, err := l.reg.DB().DB.Conn(check)
	if err != nil {
		return false
	}
	var ok bool
	if err := conn.QueryRowContext(check, tryLockSQL).Scan(&ok); err != nil || !ok {
		conn.Close()
		return false
	}
	l.conn = conn
	l.logger.Info("queue triggers: this replica leads")
	return true
}

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
}

// discard closes the lead's connection for good rather than returning it
// to the pool, where a session still holding the lock would keep it.
func (l *leader) discard() {
	l.conn.Raw(func(any) error { return driver.ErrBadConn })
	l.conn.Close()
	l.conn = nil
}
