package registry

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/uptrace/bun"
)

// insertItemsQuery adds a batch of items on PostgreSQL with one statement
// whose values travel as arrays: the text stays the same whatever the
// batch, so it is parsed once per connection, and the values are not
// written into SQL text to be parsed again.
const insertItemsQuery = `INSERT INTO work_items (id, queue, reference, unique_reference, priority, data, defer_until, deadline,
		status, end_status, output, progress, exception, reason, retry, retry_of, job_id, attempt, robot_id, breached,
		created_by, created_at, updated_at)
	SELECT i.id, $1::text, i.reference, $2::bool, i.priority, i.data, i.defer_until, i.deadline,
		'new', '', '', '', '', '', 0, '', '', 0, '', false, $3::text, $4::timestamptz, $4::timestamptz
	FROM unnest($5::text[], $6::text[], $7::smallint[], $8::text[], $9::timestamptz[], $10::timestamptz[])
		AS i (id, reference, priority, data, defer_until, deadline)`

// insertItems writes items (of one queue, made ready by AddWorkItems) in tx.
func insertItems(ctx context.Context, tx bun.Tx, items []WorkItem) error {
	n := len(items)
	ids, refs, data := make([]string, n), make([]string, n), make([]string, n)
	prio := make([]int16, n)
	deferUntil, deadline := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	for i := range items {
		it := &items[i]
		ids[i], refs[i], data[i], prio[i] = it.ID, it.Reference, it.Data, int16(it.Priority)
		if it.DeferUntil != nil {
			deferUntil[i] = pgtype.Timestamptz{Time: *it.DeferUntil, Valid: true}
		}
		if it.Deadline != nil {
			deadline[i] = pgtype.Timestamptz{Time: *it.Deadline, Valid: true}
		}
	}
	first := &items[0]
	_, err := tx.Tx.ExecContext(ctx, insertItemsQuery, pgx.QueryExecModeCacheStatement,
		first.Queue, first.UniqueReference, first.CreatedBy, first.CreatedAt, ids, refs, prio, data, deferUntil, deadline)
	return err
}
