package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/uptrace/bun"
)

// jobInserter commits submitted jobs to PostgreSQL in batches. A submit is
// durable only once committed, and a commit costs a round trip and a WAL
// flush whatever its size, so submits that arrive while a commit is in
// flight share the next one. Nothing waits for a batch to fill: at low load
// every batch holds one job and costs what a single insert would.
type jobInserter struct {
	db      *bun.DB
	queue   chan *jobInsert
	stop    chan struct{}
	workers sync.WaitGroup
}

type jobInsert struct {
	job   *Job
	audit *AuditEvent
	done  chan error
}

const (
	// inserterWorkers is how many batches may be in flight at once.
	inserterWorkers = 4
	// maxBatch bounds one statement.
	maxBatch = 256
)

func newJobInserter(db *bun.DB) *jobInserter {
	ins := &jobInserter{db: db, queue: make(chan *jobInsert, maxBatch*inserterWorkers), stop: make(chan struct{})}
	for range inserterWorkers {
		ins.workers.Go(ins.run)
	}
	return ins
}

// insert commits the job, its first event and its audit event, returning
// once they are durable.
func (ins *jobInserter) insert(ctx context.Context, job *Job, audit *AuditEvent) error {
	req := &jobInsert{job: job, audit: audit, done: make(chan error, 1)}
	select {
	case ins.queue <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-ins.stop:
		return errors.New("registry closed")
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		// The batch may still commit; the job then exists, as it would
		// had the connection dropped after a commit.
		return ctx.Err()
	}
}

func (ins *jobInserter) close() {
	close(ins.stop)
	ins.workers.Wait()
}

func (ins *jobInserter) run() {
	for {
		var first *jobInsert
		select {
		case first = <-ins.queue:
		case <-ins.stop:
			return
		}
		batch := []*jobInsert{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case req := <-ins.queue:
				batch = append(batch, req)
			default:
				break fill
			}
		}
		ins.commit(batch)
	}
}

// commit writes a batch in one statement. If the statement fails, each
// submit is tried on its own, so one bad row cannot fail the others.
func (ins *jobInserter) commit(batch []*jobInsert) {
	ctx := context.Background()
	err := ins.exec(ctx, batch)
	if err == nil || len(batch) == 1 {
		for _, req := range batch {
			req.done <- err
		}
		return
	}
	for _, req := range batch {
		req.done <- ins.exec(ctx, []*jobInsert{req})
	}
}

// exec inserts the jobs, their first events and their audit events with one
// PostgreSQL statement: the statements in WITH run exactly once, all or
// none.
func (ins *jobInserter) exec(ctx context.Context, batch []*jobInsert) error {
	jobs := make([]*Job, len(batch))
	events := make([]*JobEvent, len(batch))
	var audits []*AuditEvent
	for i, req := range batch {
		jobs[i] = req.job
		events[i] = firstEvent(req.job)
		if req.audit != nil {
			req.audit.Time = normalize(req.audit.Time)
			audits = append(audits, req.audit)
		}
	}
	var q *bun.InsertQuery
	if len(audits) > 0 {
		q = ins.db.NewInsert().Model(&audits).With("event", ins.db.NewInsert().Model(&events))
	} else {
		q = ins.db.NewInsert().Model(&events)
	}
	if _, err := q.With("job", ins.db.NewInsert().Model(&jobs)).Exec(ctx); err != nil {
		return fmt.Errorf("create job: %w", err)
	}
	return nil
}
