package auth

import (
	"context"
	"encoding/json"
	"time"

	"connectrpc.com/connect/v2"

	"github.com/casarerpa/casare/server/registry"
)

type auditKey struct{}

type auditEntry struct {
	event    registry.AuditEvent
	recorded bool
}

// AuditEvent returns the audit event of the mutation ctx belongs to, with
// its target ("job/ID") and details set, for the registry to write in the
// same transaction as the change. It returns nil outside a mutation. Once it
// is handed out, the interceptor writes no audit event of its own for a
// successful call.
func AuditEvent(ctx context.Context, target string, details map[string]any) *registry.AuditEvent {
	entry, ok := ctx.Value(auditKey{}).(*auditEntry)
	if !ok {
		return nil
	}
	entry.recorded = true
	entry.event.Target = target
	entry.event.Outcome = "ok"
	entry.event.Time = time.Now().UTC()
	entry.event.Details = encodeDetails(details)
	event := entry.event
	return &event
}

// SetAuditTarget names what a mutation acts on before it is known to
// succeed, so a failed or denied call is still audited with its target.
func SetAuditTarget(ctx context.Context, target string) {
	if entry, ok := ctx.Value(auditKey{}).(*auditEntry); ok {
		entry.event.Target = target
	}
}

// finishAudit writes the audit event that the handler did not write in its
// own transaction: for a failed or denied call, with the error code as the
// outcome, or for a success the handler did not record.
func (a *Authenticator) finishAudit(ctx context.Context, entry *auditEntry, err error) {
	if err == nil && entry.recorded {
		return
	}
	event := entry.event
	event.Time = time.Now().UTC()
	event.Outcome = "ok"
	if err != nil {
		event.Outcome = connect.CodeOf(err).String()
	}
	writeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if werr := a.store.InsertAudit(writeCtx, &event); werr != nil {
		a.logger.Error("write audit event", "action", event.Action, "actor", event.Actor, "err", werr)
	}
}

func encodeDetails(details map[string]any) string {
	if len(details) == 0 {
		return ""
	}
	b, err := json.Marshal(details)
	if err != nil {
		return ""
	}
	return string(b)
}

// WithAudit returns ctx as a mutation made by actor outside the API (a
// webhook trigger's request), so that AuditEvent gives the event to write
// with the change, as it does inside an API call. action names what was
// called ("POST /hooks/ID") and peer who called it.
func WithAudit(ctx context.Context, actor, action, peer string) context.Context {
	return context.WithValue(ctx, auditKey{}, &auditEntry{event: registry.AuditEvent{Actor: actor, Action: action, Peer: peer}})
}
