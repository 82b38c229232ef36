package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/uptrace/bun"
)

// UpsertRobot inserts the robot or replaces the row with its id.
func (r *Registry) UpsertRobot(ctx context.Context, rb *Robot) error {
	rb.cleanText()
	rb.CreatedAt = normalize(rb.CreatedAt)
	rb.UpdatedAt = now()
	_, err := r.db.NewInsert().Model(rb).
		On("CONFLICT (id) DO UPDATE").
		Set("name = EXCLUDED.name, labels = EXCLUDED.labels, capabilities = EXCLUDED.capabilities").
		Set("version = EXCLUDED.version, os = EXCLUDED.os, hostname = EXCLUDED.hostname").
		Set("status = EXCLUDED.status, max_jobs = EXCLUDED.max_jobs").
		Set("connected_since = EXCLUDED.connected_since, last_seen = EXCLUDED.last_seen").
		Set("cert_serial = EXCLUDED.cert_serial, cert_expires_at = EXCLUDED.cert_expires_at").
		Set("updated_at = EXCLUDED.updated_at").
		Exec(ctx)
	if isUniqueViolation(err) {
		return fmt.Errorf("save robot %s: name %q is taken: %w", rb.ID, rb.Name, ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("save robot %s: %w", rb.ID, err)
	}
	return nil
}

// GetRobot returns the robot with the id or else the name, or ErrNotFound.
func (r *Registry) GetRobot(ctx context.Context, idOrName string) (*Robot, error) {
	rb := new(Robot)
	err := r.db.NewSelect().Model(rb).Where("id = ? OR name = ?", idOrName, idOrName).
		OrderExpr("CASE WHEN id = ? THEN 0 ELSE 1 END", idOrName).Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get robot %s: %w", idOrName, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get robot %s: %w", idOrName, err)
	}
	return rb, nil
}

// ListRobots returns robots by name, only those in statuses when given.
func (r *Registry) ListRobots(ctx context.Context, statuses []RobotStatus, p Page) ([]Robot, string, error) {
	statuses = slices.Sorted(slices.Values(statuses))
	query := []any{"robots", statuses}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list robots: %w", err)
	}
	var robots []Robot
	q := r.db.NewSelect().Model(&robots)
	if len(statuses) > 0 {
		q = q.Where("status IN (?)", bun.In(statuses))
	}
	if after != "" {
		q = q.Where("name > ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("name ASC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list robots: %w", err)
	}
	next := ""
	if len(robots) > size {
		robots = robots[:size]
		next = encodePageToken(robots[size-1].Name, query...)
	}
	return robots, next, nil
}

// cleanText makes what the robot says about itself storable: it comes from
// the robot's machine, not through the API's validation.
func (rb *Robot) cleanText() {
	rb.Version, rb.OS, rb.Hostname = CleanText(rb.Version), CleanText(rb.OS), CleanText(rb.Hostname)
}
