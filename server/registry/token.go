package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// CreateToken stores t with the audit event. ErrAlreadyExists when an
// unrevoked token has the name.
func (r *Registry) CreateToken(ctx context.Context, t *APIToken, audit *AuditEvent) error {
	t.CreatedAt = normalize(t.CreatedAt)
	if t.ExpiresAt != nil {
		e := normalize(*t.ExpiresAt)
		t.ExpiresAt = &e
	}
	return r.insertAudited(ctx, t, audit, "token", t.Name)
}

// TokenByHash returns the token whose secret hashes to hash, revoked or
// not, or ErrNotFound.
func (r *Registry) TokenByHash(ctx context.Context, hash string) (*APIToken, error) {
	t := new(APIToken)
	err := r.db.NewSelect().Model(t).Where("hash = ?", hash).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("token by hash: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("token by hash: %w", err)
	}
	return t, nil
}

// CountActiveTokens counts tokens neither revoked nor expired.
func (r *Registry) CountActiveTokens(ctx context.Context) (int, error) {
	n, err := r.db.NewSelect().Model((*APIToken)(nil)).
		Where("revoked_at IS NULL").
		Where("expires_at IS NULL OR expires_at > ?", now()).
		Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count tokens: %w", err)
	}
	return int(n), nil
}

// ListTokens returns tokens newest first, without the revoked ones unless
// asked.
func (r *Registry) ListTokens(ctx context.Context, includeRevoked bool, p Page) ([]APIToken, string, error) {
	query := []any{"tokens", includeRevoked}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list tokens: %w", err)
	}
	var tokens []APIToken
	q := r.db.NewSelect().Model(&tokens)
	if !includeRevoked {
		q = q.Where("revoked_at IS NULL")
	}
	if after != "" {
		q = q.Where("id < ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list tokens: %w", err)
	}
	next := ""
	if len(tokens) > size {
		tokens = tokens[:size]
		next = encodePageToken(tokens[size-1].ID, query...)
	}
	return tokens, next, nil
}

// RevokeToken revokes the token with the id, or the unrevoked one with the
// name, and writes the audit event. ErrNotFound when there is none;
// ErrConflict when it is revoked already.
func (r *Registry) RevokeToken(ctx context.Context, idOrName string, at time.Time, audit *AuditEvent) (*APIToken, error) {
	at = normalize(at)
	t := new(APIToken)
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewSelect().Model(t).Where("id = ?", idOrName).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.NewSelect().Model(t).Where("name = ? AND revoked_at IS NULL", idOrName).Scan(ctx)
		}
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if t.RevokedAt != nil {
			return ErrConflict
		}
		t.RevokedAt = &at
		if _, err := tx.NewUpdate().Model(t).Column("revoked_at").WherePK().Exec(ctx); err != nil {
			return err
		}
		if audit != nil {
			audit.Target = "token/" + t.ID
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("revoke token %s: %w", idOrName, err)
	}
	return t, nil
}

// TouchTokens records when tokens were last used, all in one transaction.
func (r *Registry) TouchTokens(ctx context.Context, lastUsed map[string]time.Time) error {
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for id, at := range lastUsed {
			if _, err := tx.NewUpdate().Model((*APIToken)(nil)).
				Set("last_used_at = ?", normalize(at)).Where("id = ?", id).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record token use: %w", err)
	}
	return nil
}
