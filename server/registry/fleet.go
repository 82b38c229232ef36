package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// FleetRobot is what the metrics say about one robot, read from the
// registry so that every replica reports the whole fleet, not only the
// robots connected to it.
type FleetRobot struct {
	ID      string `bun:"id"`
	Name    string `bun:"name"`
	Version string `bun:"version"`
	OS      string `bun:"os"`
	// Status is offline for a robot whose last heartbeat is too old: the
	// replica that served it may have died without saying so.
	Status         string     `bun:"status"`
	MaxJobs        int32      `bun:"max_jobs"`
	ConnectedSince *time.Time `bun:"connected_since"`
	CertExpiresAt  *time.Time `bun:"cert_expires_at"`
	// Labels and Capabilities are stored as Robot's: the pool metrics
	// count the jobs held by the robots a pool's selector matches.
	Labels       string `bun:"labels"`
	Capabilities string `bun:"capabilities"`
	// Running counts its jobs assigned or running.
	Running int `bun:"-"`
}

// Fleet returns every robot with its status as of staleBefore and the jobs
// it holds: two queries, whatever the fleet's size.
func (r *Registry) Fleet(ctx context.Context, staleBefore time.Time) ([]FleetRobot, error) {
	var robots []FleetRobot
	err := r.db.NewSelect().Model((*Robot)(nil)).
		Column("id", "name", "version", "os", "max_jobs", "connected_since", "cert_expires_at", "labels", "capabilities").
		ColumnExpr("CASE WHEN last_seen IS NULL OR last_seen < ? THEN 'offline' ELSE status END AS status", normalize(staleBefore)).
		OrderExpr("id").Scan(ctx, &robots)
	if err != nil {
		return nil, fmt.Errorf("read the fleet: %w", err)
	}
	var held []struct {
		RobotID string `bun:"robot_id"`
		N       int    `bun:"n"`
	}
	err = r.db.NewSelect().Model((*Job)(nil)).ColumnExpr("robot_id, count(*) AS n").
		Where("status IN (?, ?)", JobAssigned, JobRunning).Where("robot_id <> ''").
		Group("robot_id").Scan(ctx, &held)
	if err != nil {
		return nil, fmt.Errorf("count the fleet's jobs: %w", err)
	}
	running := make(map[string]int, len(held))
	for _, h := range held {
		running[h.RobotID] = h.N
	}
	for i := range robots {
		robots[i].Running = running[robots[i].ID]
	}
	return robots, nil
}

// CountPendingWithMessage counts the pending jobs whose status message
// starts with one of prefixes.
func (r *Registry) CountPendingWithMessage(ctx context.Context, prefixes []string) (int, error) {
	q := r.db.NewSelect().Model((*Job)(nil)).Where("status = ?", JobPending)
	q = q.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
		for _, p := range prefixes {
			// substr, not LIKE: a prefix holding % or _ must match as written.
			q = q.WhereOr("substr(status_message, 1, ?) = ?", len(p), p)
		}
		return q
	})
	n, err := q.Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count pending jobs by message: %w", err)
	}
	return int(n), nil
}

// PendingShape is one set of stored requirements and how many pending jobs
// ask for it.
type PendingShape struct {
	// Requires is the stored form of Job.Requires.
	Requires string `bun:"requires"`
	N        int    `bun:"n"`
}

// PendingShapes counts the pending jobs by their stored requirements: one
// query whose answer has as many rows as there are distinct requirements,
// few however long the backlog, so a caller judges each shape once rather
// than each job.
func (r *Registry) PendingShapes(ctx context.Context) ([]PendingShape, error) {
	var shapes []PendingShape
	err := r.db.NewSelect().Model((*Job)(nil)).ColumnExpr("requires, count(*) AS n").
		Where("status = ?", JobPending).Group("requires").Scan(ctx, &shapes)
	if err != nil {
		return nil, fmt.Errorf("count pending jobs by requirements: %w", err)
	}
	return shapes, nil
}
