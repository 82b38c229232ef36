package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Errors of enrolment, told apart so the robot hears what went wrong.
var (
	// ErrTokenUsed: the enrollment token enrolled a robot already.
	ErrTokenUsed = errors.New("the enrollment token was already used")
	// ErrTokenExpired: the enrollment token is past its expiry.
	ErrTokenExpired = errors.New("the enrollment token has expired")
)

// CreateEnrollmentToken stores t with the audit event.
func (r *Registry) CreateEnrollmentToken(ctx context.Context, t *EnrollmentToken, audit *AuditEvent) error {
	t.CreatedAt = normalize(t.CreatedAt)
	t.ExpiresAt = normalize(t.ExpiresAt)
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(t).Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("create enrollment token: %w", err)
	}
	return nil
}

// EnrollRobot spends the enrollment token whose secret hashes to hash on
// robot: in one transaction it checks the token is unused and unexpired,
// stores the robot under the token's name and labels, and marks the token
// used. ErrNotFound for an unknown token, ErrTokenUsed, ErrTokenExpired, or
// ErrAlreadyExists when a robot has the name.
func (r *Registry) EnrollRobot(ctx context.Context, hash string, robot *Robot, at time.Time) error {
	robot.cleanText()
	at = normalize(at)
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		token := new(EnrollmentToken)
		if err := r.lockRow(ctx, tx.NewSelect().Model(token).Where("hash = ?", hash)); err != nil {
			return err
		}
		switch {
		case token.UsedAt != nil:
			return ErrTokenUsed
		case !at.Before(token.ExpiresAt):
			return ErrTokenExpired
		}
		robot.Name, robot.Labels = token.Name, token.Labels
		robot.CreatedAt, robot.UpdatedAt = at, at
		if _, err := tx.NewInsert().Model(robot).Exec(ctx); err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("a robot named %q exists: %w", robot.Name, ErrAlreadyExists)
			}
			return err
		}
		token.UsedAt, token.RobotID = &at, robot.ID
		_, err := tx.NewUpdate().Model(token).Column("used_at", "robot_id").WherePK().Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("enrol robot: %w", err)
	}
	return nil
}

// RobotConnected records what a robot said about itself on connecting and
// that it is online.
// ConnectedSince is stored as the registry keeps times, and names the
// session from then on (see RobotsOffline).
func (r *Registry) RobotConnected(ctx context.Context, rb *Robot) error {
	rb.cleanText()
	rb.UpdatedAt = now()
	if rb.ConnectedSince != nil {
		since := normalize(*rb.ConnectedSince)
		rb.ConnectedSince = &since
	}
	_, err := r.db.NewUpdate().Model(rb).
		Column("labels", "capabilities", "version", "os", "hostname", "status", "max_jobs", "connected_since", "last_seen", "updated_at",
			"protocol_version", "protocol_problem").
		WherePK().Exec(ctx)
	if err != nil {
		return fmt.Errorf("robot %s connected: %w", rb.ID, err)
	}
	return nil
}

// RobotProtocolRefused records that a robot's hello was refused because
// its protocol version cannot be served: the version it runs, the protocol
// it spoke and why, so `robots get` can tell the operator.
func (r *Registry) RobotProtocolRefused(ctx context.Context, id, version string, protocol int32, problem string) error {
	_, err := r.db.NewUpdate().Model((*Robot)(nil)).
		Set("version = ?", CleanText(version)).
		Set("protocol_version = ?", protocol).
		Set("protocol_problem = ?", CleanText(problem)).
		Set("updated_at = ?", now()).
		Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record robot %s protocol: %w", id, err)
	}
	return nil
}

// RobotSession is one connection of a robot to a replica, named by the
// time it was registered (the robot's connected_since while it lasts).
type RobotSession struct {
	ConnectedSince time.Time
	LastSeen       time.Time
	// Lost says the robot went away (its connection ended or timed out),
	// which is a robot.offline event; a replica shutting down hands its
	// robots to another and says nothing.
	Lost bool
}

// RobotsOffline marks robots offline with the time they were last seen on
// the sessions given, each only while that session is the robot's latest:
// a replica that lost a robot (it was frozen, or cut off from it) must not
// mark it offline once it has registered with another replica.
func (r *Registry) RobotsOffline(ctx context.Context, sessions map[string]RobotSession) error {
	if len(sessions) == 0 {
		return nil
	}
	type ended struct {
		ID             string    `bun:"id"`
		ConnectedSince time.Time `bun:"connected_since"`
		LastSeen       time.Time `bun:"last_seen"`
	}
	rows := make([]ended, 0, len(sessions))
	for id, s := range sessions {
		rows = append(rows, ended{ID: id, ConnectedSince: normalize(s.ConnectedSince), LastSeen: normalize(s.LastSeen)})
	}
	offline := func(ctx context.Context, db bun.IDB) ([]string, error) {
		var changed []string
		// SQLite's RETURNING takes the updated table's columns unqualified;
		// on PostgreSQL _data's id would make that ambiguous.
		returning := "robot.id"
		if r.dialect == "sqlite" {
			returning = "id"
		}
		_, err := db.NewUpdate().
			With("_data", db.NewValues(&rows)).
			Model((*Robot)(nil)).
			TableExpr("_data").
			Set("last_seen = _data.last_seen").
			Set("status = 'offline'").
			Set("connected_since = NULL").
			Set("updated_at = ?", now()).
			Where("robot.id = _data.id").
			Where("robot.connected_since = _data.connected_since").
			Returning(returning).
			Exec(ctx, &changed)
		return changed, err
	}
	lost := false
	for _, s := range sessions {
		lost = lost || s.Lost
	}
	var err error
	if !lost {
		// Nothing to tell: one statement, which holds the robots' rows
		// only while the database runs it. In a transaction they would
		// stay locked while this replica is between its statements, and a
		// replica frozen there would keep a robot it let go from
		// registering with another.
		_, err = offline(ctx, r.db)
	} else {
		// The change and its robot.offline events commit together.
		err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			changed, err := offline(ctx, tx)
			if err != nil {
				return err
			}
			var events []Event
			for _, id := range changed {
				if s := sessions[id]; s.Lost {
					events = append(events, Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: id, Time: s.LastSeen})
				}
			}
			return AppendEvents(ctx, tx, events...)
		})
	}
	if err != nil {
		return fmt.Errorf("record robots offline: %w", err)
	}
	return nil
}

// TouchRobots records when robots were last seen, all in one transaction:
// heartbeats are counted in memory and written in batches.
func (r *Registry) TouchRobots(ctx context.Context, lastSeen map[string]time.Time) error {
	if len(lastSeen) == 0 {
		return nil
	}
	// One statement for the whole batch: a fleet's heartbeats cost one
	// round trip per flush, not one per robot.
	type seen struct {
		ID       string    `bun:"id"`
		LastSeen time.Time `bun:"last_seen"`
	}
	rows := make([]seen, 0, len(lastSeen))
	for id, t := range lastSeen {
		rows = append(rows, seen{ID: id, LastSeen: normalize(t)})
	}
	q := r.db.NewUpdate().
		With("_data", r.db.NewValues(&rows)).
		Model((*Robot)(nil)).
		TableExpr("_data").
		Set("last_seen = _data.last_seen").
		Set("updated_at = ?", now()).
		Where("robot.id = _data.id")
	if _, err := q.Exec(ctx); err != nil {
		return fmt.Errorf("update robots: %w", err)
	}
	return nil
}

// RevokedSerials returns the serials of every revoked certificate.
func (r *Registry) RevokedSerials(ctx context.Context) ([]string, error) {
	var serials []string
	if err := r.db.NewSelect().Model((*RevokedCertificate)(nil)).Column("serial").Scan(ctx, &serials); err != nil {
		return nil, fmt.Errorf("revoked certificates: %w", err)
	}
	return serials, nil
}

// DeleteRobot removes the robot with the id or name and revokes its
// certificate, with the audit event, in one transaction. It returns the
// robot as it was; ErrNotFound when there is none.
func (r *Registry) DeleteRobot(ctx context.Context, idOrName string, audit *AuditEvent) (*Robot, error) {
	var robot *Robot
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		rb := new(Robot)
		err := tx.NewSelect().Model(rb).Where("id = ? OR name = ?", idOrName, idOrName).
			OrderExpr("CASE WHEN id = ? THEN 0 ELSE 1 END", idOrName).Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if rb.CertSerial != "" {
			revoked := &RevokedCertificate{Serial: rb.CertSerial, RobotID: rb.ID, RevokedAt: now()}
			if _, err := tx.NewInsert().Model(revoked).On("CONFLICT (serial) DO NOTHING").Exec(ctx); err != nil {
				return err
			}
		}
		if _, err := tx.NewDelete().Model(rb).WherePK().Exec(ctx); err != nil {
			return err
		}
		if audit != nil {
			audit.Target = "robot/" + rb.ID
		}
		robot = rb
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("delete robot %s: %w", idOrName, err)
	}
	return robot, nil
}

// SetRobotStatus records a robot's status.
func (r *Registry) SetRobotStatus(ctx context.Context, id string, status RobotStatus) error {
	_, err := r.db.NewUpdate().Model((*Robot)(nil)).Set("status = ?", status).Set("updated_at = ?", now()).Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("set robot %s %s: %w", id, status, err)
	}
	return nil
}

// SetRobotsStatus sets the status of many robots with one statement: the
// dispatcher's busy and idle changes arrive by the hundred a second under
// load.
func (r *Registry) SetRobotsStatus(ctx context.Context, ids []string, status RobotStatus) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := r.db.NewUpdate().Model((*Robot)(nil)).Set("status = ?", status).Set("updated_at = ?", now()).Where("id IN (?)", bun.In(ids)).Exec(ctx)
	if err != nil {
		return fmt.Errorf("set %d robots %s: %w", len(ids), status, err)
	}
	return nil
}

// SetRobotCertificate records a robot's renewed certificate.
func (r *Registry) SetRobotCertificate(ctx context.Context, id, serial string, expires time.Time) error {
	expires = normalize(expires)
	_, err := r.db.NewUpdate().Model((*Robot)(nil)).Set("cert_serial = ?", serial).Set("cert_expires_at = ?", expires).
		Set("updated_at = ?", now()).Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record robot %s certificate: %w", id, err)
	}
	return nil
}
