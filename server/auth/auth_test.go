package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connectinprocess"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/registry"
)

// fakeStore is an in-memory TokenStore.
type fakeStore struct {
	mu      sync.Mutex
	tokens  map[string]*registry.APIToken // by hash
	lookups int
	audits  []registry.AuditEvent
	touched map[string]time.Time
}

func (s *fakeStore) TokenByHash(_ context.Context, hash string) (*registry.APIToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	if t, ok := s.tokens[hash]; ok {
		copy := *t
		return &copy, nil
	}
	return nil, registry.ErrNotFound
}

func (s *fakeStore) TouchTokens(_ context.Context, m map[string]time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range m {
		s.touched[k] = v
	}
	return nil
}

func (s *fakeStore) InsertAudit(_ context.Context, e *registry.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audits = append(s.audits, *e)
	return nil
}

// jobs answers SubmitJob by recording the audit event in "its transaction"
// the way the real handlers do, and ListJobs with nothing.
type jobs struct {
	casarev1connect.UnimplementedJobServiceHandler
	store *fakeStore
	fail  bool
}

func (j *jobs) SubmitJob(ctx context.Context, _ *casarev1.SubmitJobRequest) (*casarev1.SubmitJobResponse, error) {
	if j.fail {
		SetAuditTarget(ctx, "job/failed")
		return nil, connect.NewError(connect.CodeInvalidArgument, "bad")
	}
	e := AuditEvent(ctx, "job/1", map[string]any{"workflow": "w"})
	j.store.InsertAudit(ctx, e)
	return &casarev1.SubmitJobResponse{}, nil
}

func (j *jobs) ListJobs(ctx context.Context, _ *casarev1.ListJobsRequest) (*casarev1.ListJobsResponse, error) {
	if _, ok := PrincipalFrom(ctx); !ok {
		return nil, errors.New("no principal in the handler's context")
	}
	return &casarev1.ListJobsResponse{}, nil
}

type bundle struct {
	store  *fakeStore
	auth   *Authenticator
	jobs   *jobs
	client casarev1connect.JobServiceClient
	tokens map[string]string // role name -> secret
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{store: &fakeStore{tokens: map[string]*registry.APIToken{}, touched: map[string]time.Time{}}, tokens: map[string]string{}}
	for _, role := range []string{registry.RoleViewer, registry.RoleOperator, registry.RoleAdmin} {
		secret := NewToken()
		b.tokens[role] = secret
		b.store.tokens[HashToken(secret)] = &registry.APIToken{ID: "id-" + role, Name: role + "-token", Role: role}
	}
	b.auth = NewAuthenticator(b.store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	server := connect.NewServer(b.auth.Interceptor())
	b.jobs = &jobs{store: b.store}
	casarev1connect.RegisterJobServiceHandler(server, b.jobs)
	b.client = casarev1connect.NewJobServiceClient(connect.NewClient(connectinprocess.New(server)))
	return b
}

func withToken(token string) context.Context {
	ctx, info := connect.NewClientContext(context.Background())
	if token != "" {
		info.RequestHeader().Set("Authorization", "Bearer "+token)
	}
	return ctx
}

func TestTokens(t *testing.T) {
	a, b := NewToken(), NewToken()
	if a == b || !strings.HasPrefix(a, TokenPrefix) || !WellFormed(a) {
		t.Fatalf("NewToken() = %q, %q", a, b)
	}
	if WellFormed("csr_short") || WellFormed("Bearer x") || WellFormed(strings.TrimPrefix(a, TokenPrefix)) {
		t.Error("WellFormed accepts a malformed token")
	}
	if HashToken(a) == HashToken(b) || len(HashToken(a)) != 64 || strings.Contains(HashToken(a), a) {
		t.Error("HashToken does not give distinct 64-hex digests")
	}
}

func TestAuthentication(t *testing.T) {
	b := setup(t)
	tests := []struct {
		name  string
		token string
		code  connect.Code
		msg   string
	}{
		{"NoToken", "", connect.CodeUnauthenticated, "missing bearer token"},
		{"Malformed", "hello", connect.CodeUnauthenticated, "invalid bearer token"},
		{"Unknown", NewToken(), connect.CodeUnauthenticated, "invalid bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.client.ListJobs(withToken(tt.token), &casarev1.ListJobsRequest{})
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != tt.code || !strings.Contains(cerr.Message(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}

	t.Run("RevokedAndExpired", func(t *testing.T) {
		past := time.Now().Add(-time.Minute)
		revoked, expired := NewToken(), NewToken()
		b.store.tokens[HashToken(revoked)] = &registry.APIToken{ID: "r", Name: "gone", Role: registry.RoleAdmin, RevokedAt: &past}
		b.store.tokens[HashToken(expired)] = &registry.APIToken{ID: "e", Name: "old", Role: registry.RoleAdmin, ExpiresAt: &past}
		if _, err := b.client.ListJobs(withToken(revoked), &casarev1.ListJobsRequest{}); connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("revoked token: %v", err)
		}
		if _, err := b.client.ListJobs(withToken(expired), &casarev1.ListJobsRequest{}); connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "expired") {
			t.Errorf("expired token: %v", err)
		}
	})

	t.Run("CachedThenForgotten", func(t *testing.T) {
		token := b.tokens[registry.RoleViewer]
		before := b.store.lookups
		for range 3 {
			if _, err := b.client.ListJobs(withToken(token), &casarev1.ListJobsRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		if n := b.store.lookups - before; n > 1 {
			t.Errorf("%d lookups for three calls with one token, want at most 1", n)
		}
		now := time.Now()
		b.store.tokens[HashToken(token)].RevokedAt = &now
		b.auth.Forget("id-" + registry.RoleViewer)
		if _, err := b.client.ListJobs(withToken(token), &casarev1.ListJobsRequest{}); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("a token revoked and forgotten still works: %v", err)
		}
	})
}

func TestRoles(t *testing.T) {
	b := setup(t)
	tests := []struct {
		role   string
		submit connect.Code
	}{
		{registry.RoleViewer, connect.CodePermissionDenied},
		{registry.RoleOperator, 0},
		{registry.RoleAdmin, 0},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			ctx := withToken(b.tokens[tt.role])
			if _, err := b.client.ListJobs(ctx, &casarev1.ListJobsRequest{}); err != nil {
				t.Errorf("ListJobs as %s: %v", tt.role, err)
			}
			_, err := b.client.SubmitJob(ctx, &casarev1.SubmitJobRequest{})
			if tt.submit == 0 && err != nil || tt.submit != 0 && connect.CodeOf(err) != tt.submit {
				t.Errorf("SubmitJob as %s: %v, want code %v", tt.role, err, tt.submit)
			}
		})
	}
}

func TestEveryMutationIsAuditedOnce(t *testing.T) {
	b := setup(t)
	// Success: the handler records the event in its own transaction.
	if _, err := b.client.SubmitJob(withToken(b.tokens[registry.RoleOperator]), &casarev1.SubmitJobRequest{}); err != nil {
		t.Fatal(err)
	}
	// Denied: the interceptor records it.
	b.client.SubmitJob(withToken(b.tokens[registry.RoleViewer]), &casarev1.SubmitJobRequest{})
	// Failed in the handler: the interceptor records it with its target.
	b.jobs.fail = true
	b.client.SubmitJob(withToken(b.tokens[registry.RoleAdmin]), &casarev1.SubmitJobRequest{})
	// Reads are not audited.
	b.client.ListJobs(withToken(b.tokens[registry.RoleAdmin]), &casarev1.ListJobsRequest{})

	var got []string
	for _, e := range b.store.audits {
		got = append(got, e.Actor+" "+e.Target+" "+e.Outcome)
		if e.Action != casarev1connect.JobServiceSubmitJobProcedure || e.Time.IsZero() {
			t.Errorf("audit event %+v lacks its action or time", e)
		}
	}
	want := "operator-token job/1 ok|viewer-token  permission_denied|admin-token job/failed invalid_argument"
	if strings.Join(got, "|") != want {
		t.Fatalf("audit events:\n%s\nwant:\n%s", strings.Join(got, "|"), want)
	}
}

func TestLastUsedIsWrittenInBatches(t *testing.T) {
	b := setup(t)
	for range 5 {
		b.client.ListJobs(withToken(b.tokens[registry.RoleViewer]), &casarev1.ListJobsRequest{})
	}
	if len(b.store.touched) != 0 {
		t.Fatal("last-used was written per request")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.auth.Run(ctx, time.Hour); close(done) }()
	cancel()
	<-done
	if _, ok := b.store.touched["id-"+registry.RoleViewer]; !ok || len(b.store.touched) != 1 {
		t.Fatalf("after the final flush: %v", b.store.touched)
	}
}
