package auth

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// TokenStore is what the authenticator needs from the registry.
type TokenStore interface {
	TokenByHash(ctx context.Context, hash string) (*registry.APIToken, error)
	TouchTokens(ctx context.Context, lastUsed map[string]time.Time) error
	InsertAudit(ctx context.Context, e *registry.AuditEvent) error
}

// Principal is the authenticated caller of an RPC.
type Principal struct {
	TokenID string
	Name    string
	Role    casarev1.Role
}

type principalKey struct{}

// PrincipalFrom returns the caller of the RPC ctx belongs to.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p, for code that acts on a caller's
// behalf outside an RPC (tests, the command line).
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// cacheTTL bounds how long a token lookup is reused. Revocation through this
// server takes effect at once (Forget); through another replica within this.
const cacheTTL = 5 * time.Second

// maxCached bounds the cache so a flood of distinct bad tokens cannot grow
// memory without limit.
const maxCached = 10_000

type cached struct {
	token   *registry.APIToken // nil: no such token
	fetched time.Time
}

// Authenticator checks bearer tokens and roles on every RPC and writes the
// audit log for mutations.
type Authenticator struct {
	store  TokenStore
	logger *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	cache    map[string]cached // by token hash
	lastUsed map[string]time.Time

	rules sync.Map // procedure -> methodRule

	limit *failureLimiter
}

// NewAuthenticator returns an Authenticator that looks tokens up in store.
func NewAuthenticator(store TokenStore, logger *slog.Logger) *Authenticator {
	return &Authenticator{
		store:    store,
		logger:   logger,
		now:      time.Now,
		cache:    make(map[string]cached),
		lastUsed: make(map[string]time.Time),
		limit:    newFailureLimiter(logger),
	}
}

// Collector is casare_auth_failures_total, for the server's metrics.
func (a *Authenticator) Collector() prometheus.Collector { return a.limit.failures }

// Interceptor returns the server interceptor that authenticates the caller,
// records the audit event of a mutation, and then checks the caller's role
// against the one the method requires. A denied mutation is audited too.
func (a *Authenticator) Interceptor() connect.ServerInterceptor {
	return func(next connect.ServerFunc) connect.ServerFunc {
		return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
			info, _ := connect.CallInfoForServerContext(ctx)
			var peer string
			if info != nil {
				peer = peerIP(info.PeerAddr)
			}
			// A peer over its limit is refused before its token is read,
			// so that a right guess in the window tells it nothing.
			if wait := a.limit.blocked(peer, a.now()); wait > 0 {
				a.limit.refuse()
				if info != nil {
					info.ResponseHeader().Set("Retry-After", retryAfter(wait))
				}
				return connect.Errorf(connect.CodeResourceExhausted,
					"too many failed authentications from %s: retry in %s", peer, wait.Round(time.Second))
			}
			principal, reason, err := a.authenticate(ctx, info)
			if err != nil {
				if reason != "" {
					a.limit.failed(peer, reason, a.now())
				}
				return err
			}
			ctx = WithPrincipal(ctx, principal)
			rule := a.rule(spec)
			var entry *auditEntry
			if rule.mutation {
				entry = &auditEntry{event: registry.AuditEvent{
					Actor:        principal.Name,
					ActorTokenID: principal.TokenID,
					Action:       spec.Procedure,
				}}
				if info != nil {
					entry.event.Peer = info.PeerAddr
				}
				ctx = context.WithValue(ctx, auditKey{}, entry)
			}
			if principal.Role < rule.role {
				err = connect.Errorf(connect.CodePermissionDenied,
					"%s needs the %s role; token %q has %s",
					spec.Procedure, roleName(rule.role), principal.Name, roleName(principal.Role))
			} else {
				err = next(ctx, spec, stream)
			}
			if entry != nil {
				a.finishAudit(ctx, entry, err)
			}
			return err
		}
	}
}

// authenticate returns the caller, or an error and the reason of
// casare_auth_failures_total it counts under ("" when the token could not
// be checked, which is no failure of the caller's).
func (a *Authenticator) authenticate(ctx context.Context, info *connect.CallInfo) (Principal, string, error) {
	var header string
	if info != nil {
		header = info.RequestHeader().Get("Authorization")
	}
	if header == "" {
		return Principal{}, ReasonMissing, connect.NewError(connect.CodeUnauthenticated,
			"missing bearer token: send \"Authorization: Bearer <token>\" (casarectl: --token or CASARE_TOKEN)")
	}
	scheme, secret, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") || !WellFormed(strings.TrimSpace(secret)) {
		return Principal{}, ReasonMalformed, connect.NewError(connect.CodeUnauthenticated, "invalid bearer token")
	}
	hash := HashToken(strings.TrimSpace(secret))
	token, err := a.lookup(ctx, hash)
	if err != nil {
		return Principal{}, "", connect.NewError(connect.CodeUnavailable, "cannot check the token now").WithCause(err)
	}
	now := a.now()
	switch {
	case token == nil:
		return Principal{}, ReasonUnknown, connect.NewError(connect.CodeUnauthenticated, "invalid bearer token")
	case token.RevokedAt != nil:
		return Principal{}, ReasonRevoked, connect.Errorf(connect.CodeUnauthenticated, "token %q was revoked", token.Name)
	case token.ExpiresAt != nil && !now.Before(*token.ExpiresAt):
		return Principal{}, ReasonExpired, connect.Errorf(connect.CodeUnauthenticated, "token %q expired at %s", token.Name, token.ExpiresAt.UTC().Format(time.RFC3339))
	}
	a.mu.Lock()
	a.lastUsed[token.ID] = now
	a.mu.Unlock()
	return Principal{TokenID: token.ID, Name: token.Name, Role: RoleToProto(token.Role)}, "", nil
}

// lookup returns the token with the hash, or nil when there is none.
func (a *Authenticator) lookup(ctx context.Context, hash string) (*registry.APIToken, error) {
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[hash]
	a.mu.Unlock()
	if ok && now.Sub(c.fetched) < cacheTTL {
		return c.token, nil
	}
	token, err := a.store.TokenByHash(ctx, hash)
	if errors.Is(err, registry.ErrNotFound) {
		token, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if len(a.cache) >= maxCached {
		clear(a.cache)
	}
	a.cache[hash] = cached{token: token, fetched: now}
	a.mu.Unlock()
	return token, nil
}

// Forget drops cached lookups of a token, so a revocation through this
// server takes effect on the next call.
func (a *Authenticator) Forget(tokenID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for hash, c := range a.cache {
		if c.token != nil && c.token.ID == tokenID {
			delete(a.cache, hash)
		}
	}
}

// Run writes when tokens were last used every interval, in one batch, until
// ctx is done, and once more then: a write per request would cost more than
// the request.
func (a *Authenticator) Run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			a.flushLastUsed(flushCtx)
			cancel()
			return
		case <-ticker.C:
			a.flushLastUsed(ctx)
		}
	}
}

func (a *Authenticator) flushLastUsed(ctx context.Context) {
	a.mu.Lock()
	batch := a.lastUsed
	a.lastUsed = make(map[string]time.Time, len(batch))
	a.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := a.store.TouchTokens(ctx, batch); err != nil {
		a.logger.Warn("record token use", "tokens", len(batch), "err", err)
	}
}

type methodRule struct {
	role     casarev1.Role
	mutation bool
}

// rule reads the role and mutation options of the method from its proto
// descriptor. A method without them needs admin: forgetting the annotation
// fails closed.
func (a *Authenticator) rule(spec connect.Spec) methodRule {
	if r, ok := a.rules.Load(spec.Procedure); ok {
		return r.(methodRule)
	}
	r := methodRule{role: casarev1.Role_ROLE_ADMIN, mutation: true}
	if md, ok := spec.Schema.(protoreflect.MethodDescriptor); ok && md.Options() != nil {
		opts := md.Options()
		if role, ok := proto.GetExtension(opts, casarev1.E_RequiredRole).(casarev1.Role); ok && role != casarev1.Role_ROLE_UNSPECIFIED {
			r.role = role
			r.mutation = proto.GetExtension(opts, casarev1.E_Mutation).(bool)
		}
	}
	a.rules.Store(spec.Procedure, r)
	return r
}
