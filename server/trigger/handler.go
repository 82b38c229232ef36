package trigger

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/stdwebhook"
)

// Pattern is where the handler is mounted on the API mux.
const Pattern = "POST /hooks/{id}"

// Defaults of Options.
const (
	DefaultRate         = 10
	DefaultMaxBodyBytes = 1 << 20
	DefaultReadTimeout  = 30 * time.Second
)

// maxIDLength is the longest trigger id worth a look in the registry;
// ids are UUIDs.
const maxIDLength = 64

// IdempotencyHeader carries a delivery id for a bearer trigger's sender
// that has no webhook-id.
const IdempotencyHeader = "Idempotency-Key"

// Store reads triggers.
type Store interface {
	TriggerByID(ctx context.Context, id string) (*registry.Trigger, error)
}

// Submitter creates jobs: the API's one Submit path.
type Submitter interface {
	Submit(ctx context.Context, req *casarev1.SubmitJobRequest, createdBy string) (*registry.Job, bool, error)
}

// Options configures a Handler.
type Options struct {
	Store  Store
	Jobs   Submitter
	Logger *slog.Logger
	// Metrics, when set, gets the handler's metrics.
	Metrics prometheus.Registerer
	// DefaultRate is the requests a second a trigger without a rate of
	// its own accepts on this replica (DefaultRate when 0).
	DefaultRate float64
	// MaxBodyBytes bounds a request body (DefaultMaxBodyBytes when 0).
	MaxBodyBytes int64
	// ReadTimeout bounds reading a request, so a slow client cannot hold
	// a connection (DefaultReadTimeout when 0).
	ReadTimeout time.Duration
	// Tolerance is how far a signed timestamp may be from the clock
	// (stdwebhook.DefaultTolerance when 0).
	Tolerance time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Handler serves POST /hooks/{id}.
//
// A Standard Webhooks sender's delivery id (webhook-id) is the job's
// idempotency key, trigger/<trigger id>/<webhook-id>: a retry of a delivery
// and a replay of it within the signature's five-minute tolerance both
// answer 200 with the job the first made, never a second job; a replay
// after the tolerance is refused 401 as stale. A bearer trigger's sender
// may give the delivery id in Idempotency-Key (or webhook-id) to the same
// effect; without one each request makes a job.
type Handler struct {
	opts Options

	requests *prometheus.CounterVec
	latency  prometheus.Histogram

	mu       sync.Mutex
	limiters map[string]*limiter
	mappings map[string]*compiled
}

type limiter struct {
	rate  float64
	burst int
	lim   *rate.Limiter
}

type compiled struct {
	source  string
	mapping *Mapping
}

// New returns a handler and registers its metrics.
func New(opts Options) *Handler {
	if opts.DefaultRate <= 0 {
		opts.DefaultRate = DefaultRate
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.Tolerance <= 0 {
		opts.Tolerance = stdwebhook.DefaultTolerance
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		opts: opts,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casare_trigger_requests_total",
			Help: "Requests to webhook triggers by outcome: created, existing, unauthorized, rate_limited, invalid, too_large, not_found, unavailable, error.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "casare_trigger_request_duration_seconds",
			Help:    "Time from a webhook trigger's request to its job created (or found, for a retry).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		limiters: map[string]*limiter{},
		mappings: map[string]*compiled{},
	}
	for _, o := range []string{"created", "existing", "unauthorized", "rate_limited", "invalid", "too_large", "not_found", "unavailable", "error"} {
		h.requests.WithLabelValues(o)
	}
	if opts.Metrics != nil {
		opts.Metrics.MustRegister(h.requests, h.latency)
	}
	return h
}

// failure is an answer other than a job: its status, the outcome counted
// and the message the sender sees.
type failure struct {
	status  int
	outcome string
	msg     string
	header  http.Header
}

func (f *failure) Error() string { return f.msg }

func fail(status int, outcome, format string, args ...any) *failure {
	return &failure{status: status, outcome: outcome, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP answers a request to a trigger: 202 with {"jobId": …} for a
// new job, 200 with the job a delivery made before, or an error status
// with {"error": …} saying what is wrong (404 no trigger, 401 not
// authentic, 429 over the rate, 413 too large, 400 not what it says it is,
// 422 inputs the mapping or the workflow refuse, 503 database down).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.opts.Now()
	// The API port has no read timeout, for its streams; a hook's request
	// is one body, and a client too slow to send it loses the connection.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.opts.ReadTimeout))
	job, existing, err := h.serve(w, r)
	var f *failure
	switch {
	case errors.As(err, &f):
	case err != nil:
		h.opts.Logger.Error("webhook trigger", "path", r.URL.Path, "err", err)
		f = fail(http.StatusInternalServerError, "error", "internal error")
	}
	if f != nil {
		h.requests.WithLabelValues(f.outcome).Inc()
		for k, v := range f.header {
			w.Header()[k] = v
		}
		writeJSON(w, f.status, map[string]string{"error": f.msg})
		return
	}
	h.latency.Observe(h.opts.Now().Sub(start).Seconds())
	status, outcome := http.StatusAccepted, "created"
	if existing {
		status, outcome = http.StatusOK, "existing"
	}
	h.requests.WithLabelValues(outcome).Inc()
	writeJSON(w, status, map[string]string{"jobId": job.ID})
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (*registry.Job, bool, error) {
	ctx := r.Context()
	id := r.PathValue("id")
	if len(id) > maxIDLength {
		return nil, false, fail(http.StatusNotFound, "not_found", "no trigger with that id")
	}
	t, err := h.opts.Store.TriggerByID(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		h.forget(id)
		return nil, false, fail(http.StatusNotFound, "not_found", "no trigger with id %q", id)
	}
	if registry.Unavailable(err) {
		f := fail(http.StatusServiceUnavailable, "unavailable", "the database is unavailable now; try again")
		f.header = http.Header{"Retry-After": {"5"}}
		return nil, false, f
	}
	if err != nil {
		return nil, false, err
	}
	// A bearer token is checked before the body is read, so a sender
	// without it costs no more than its headers.
	if t.Auth == registry.TriggerAuthBearer {
		if err := h.checkBearer(t, r); err != nil {
			return nil, false, err
		}
	}
	body, err := h.readBody(w, r)
	if err != nil {
		return nil, false, err
	}
	deliveryID := r.Header.Get(stdwebhook.HeaderID)
	if t.Auth == registry.TriggerAuthBearer {
		if key := r.Header.Get(IdempotencyHeader); key != "" {
			deliveryID = key
		}
		if err := checkDeliveryID(deliveryID); err != nil {
			return nil, false, err
		}
	} else if err := h.checkSignature(t, r, body); err != nil {
		return nil, false, err
	}
	// Counted only once the sender proved it holds the secret, so nobody
	// else can spend a trigger's rate.
	if err := h.allow(t); err != nil {
		return nil, false, err
	}
	mapping, err := h.mapping(t)
	if err != nil {
		return nil, false, err
	}
	req, err := request(r, body)
	if err != nil {
		return nil, false, err
	}
	inputs, err := mapping.Eval(req)
	if err != nil {
		return nil, false, fail(http.StatusUnprocessableEntity, "invalid", "%v", err)
	}
	submit := &casarev1.SubmitJobRequest{
		Source:          &casarev1.SubmitJobRequest_WorkflowName{WorkflowName: t.WorkflowName},
		WorkflowVersion: t.WorkflowVersion,
		Inputs:          inputs,
		Priority:        casarev1.JobPriority(t.Priority),
		MaxAttempts:     t.MaxAttempts,
	}
	if t.Requires != "" && t.Requires != "{}" {
		submit.Requires = new(casarev1.Requirements)
		if err := protojson.Unmarshal([]byte(t.Requires), submit.Requires); err != nil {
			return nil, false, fmt.Errorf("decode requirements of trigger %s: %w", t.ID, err)
		}
	}
	if deliveryID != "" {
		submit.IdempotencyKey = "trigger/" + t.ID + "/" + deliveryID
	}
	ctx = auth.WithAudit(ctx, "trigger/"+t.Name, "POST /hooks/"+t.ID, r.RemoteAddr)
	job, existing, err := h.opts.Jobs.Submit(ctx, submit, "trigger/"+t.Name)
	if err != nil {
		return nil, false, submitError(err)
	}
	return job, existing, nil
}

// submitError says why Submit refused the job: the inputs the mapping made
// do not suit the workflow (or it is gone), or the registry cannot serve.
func submitError(err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeFailedPrecondition:
		var cerr *connect.Error
		msg := err.Error()
		if errors.As(err, &cerr) {
			msg = cerr.Message()
		}
		return fail(http.StatusUnprocessableEntity, "invalid", "%s", msg)
	case connect.CodeUnavailable:
		f := fail(http.StatusServiceUnavailable, "unavailable", "the database is unavailable now; try again")
		f.header = http.Header{"Retry-After": {"5"}}
		return f
	}
	return err
}

func (h *Handler) checkBearer(t *registry.Trigger, r *http.Request) error {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		f := fail(http.StatusUnauthorized, "unauthorized", "Authorization: missing bearer token")
		f.header = http.Header{"Www-Authenticate": {`Bearer realm="casare"`}}
		return f
	}
	sum := sha256.Sum256([]byte(token))
	got := hex.EncodeToString(sum[:])
	for _, want := range h.secrets(t) {
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
			return nil
		}
	}
	f := fail(http.StatusUnauthorized, "unauthorized", "Authorization: the bearer token is not this trigger's")
	f.header = http.Header{"Www-Authenticate": {`Bearer realm="casare", error="invalid_token"`}}
	return f
}

func (h *Handler) checkSignature(t *registry.Trigger, r *http.Request, body []byte) error {
	var keys [][]byte
	for _, s := range h.secrets(t) {
		key, err := stdwebhook.DecodeSecret(s)
		if err != nil {
			return fmt.Errorf("trigger %s: stored secret: %w", t.ID, err)
		}
		keys = append(keys, key)
	}
	err := stdwebhook.Verify(keys, stdwebhook.Request{
		ID:        r.Header.Get(stdwebhook.HeaderID),
		Timestamp: r.Header.Get(stdwebhook.HeaderTimestamp),
		Signature: r.Header.Get(stdwebhook.HeaderSignature),
		Body:      body,
	}, h.opts.Now(), h.opts.Tolerance)
	if err != nil {
		return fail(http.StatusUnauthorized, "unauthorized", "%v", err)
	}
	return nil
}

// secrets are the secrets a request may use now: the trigger's own and,
// during its grace period, the one the last rotation replaced.
func (h *Handler) secrets(t *registry.Trigger) []string {
	s := []string{t.Secret}
	if t.PreviousSecret != "" && t.PreviousSecretExpiresAt != nil && h.opts.Now().Before(*t.PreviousSecretExpiresAt) {
		s = append(s, t.PreviousSecret)
	}
	return s
}

// checkDeliveryID holds a bearer sender's delivery id to what a webhook-id
// may be, as it becomes part of the idempotency key.
func checkDeliveryID(id string) error {
	if len(id) > stdwebhook.MaxIDLength {
		return fail(http.StatusBadRequest, "invalid", "%s: longer than %d characters", IdempotencyHeader, stdwebhook.MaxIDLength)
	}
	for i := range len(id) {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fail(http.StatusBadRequest, "invalid", "%s: only visible ASCII characters", IdempotencyHeader)
		}
	}
	return nil
}

func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	// Given w, the reader has the server close the connection after a
	// body over the limit instead of reading the rest.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, fail(http.StatusRequestEntityTooLarge, "too_large", "request body: larger than the limit of %s", expr.FormatSize(int(h.opts.MaxBodyBytes)))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fail(http.StatusRequestTimeout, "invalid", "request body: not sent within the read timeout of %s", h.opts.ReadTimeout)
	case err != nil:
		return nil, fail(http.StatusBadRequest, "invalid", "request body: %v", err)
	}
	return body, nil
}

// allow takes a token from the trigger's rate limiter, or says when one
// will be there.
func (h *Handler) allow(t *registry.Trigger) error {
	perSecond := t.RatePerSecond
	if perSecond <= 0 {
		perSecond = h.opts.DefaultRate
	}
	burst := int(t.Burst)
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	h.mu.Lock()
	l := h.limiters[t.ID]
	if l == nil || l.rate != perSecond || l.burst != burst {
		l = &limiter{rate: perSecond, burst: burst, lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
		h.limiters[t.ID] = l
	}
	h.mu.Unlock()
	now := h.opts.Now()
	if l.lim.AllowN(now, 1) {
		return nil
	}
	res := l.lim.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	res.CancelAt(now)
	f := fail(http.StatusTooManyRequests, "rate_limited", "trigger %s accepts %g requests a second (burst %d); retry later", t.Name, perSecond, burst)
	f.header = http.Header{"Retry-After": {strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))}}
	return f
}

// mapping returns the trigger's compiled mapping, compiling it again only
// when its expressions changed.
func (h *Handler) mapping(t *registry.Trigger) (*Mapping, error) {
	h.mu.Lock()
	c := h.mappings[t.ID]
	h.mu.Unlock()
	if c != nil && c.source == t.Inputs {
		return c.mapping, nil
	}
	var inputs map[string]string
	if err := json.Unmarshal([]byte(t.Inputs), &inputs); err != nil {
		return nil, fmt.Errorf("decode inputs of trigger %s: %w", t.ID, err)
	}
	// Checked against the workflow when the trigger was made; the job's
	// inputs are checked again by Submit against the version it runs.
	m, err := Compile(inputs, nil)
	if err != nil {
		return nil, fail(http.StatusUnprocessableEntity, "invalid", "%v", err)
	}
	h.mu.Lock()
	h.mappings[t.ID] = &compiled{source: t.Inputs, mapping: m}
	h.mu.Unlock()
	return m, nil
}

// forget drops what the handler keeps of a trigger that is gone.
func (h *Handler) forget(id string) {
	h.mu.Lock()
	delete(h.limiters, id)
	delete(h.mappings, id)
	h.mu.Unlock()
}

// request is what the mapping reads of r.
func request(r *http.Request, body []byte) (*Request, error) {
	req := &Request{Headers: make(map[string]string, len(r.Header)), Query: map[string]string{}}
	for name, values := range r.Header {
		name = strings.ToLower(name)
		if name == "authorization" {
			continue
		}
		req.Headers[name] = strings.ToValidUTF8(strings.Join(values, ", "), "\uFFFD")
	}
	for name, values := range r.URL.Query() {
		if len(values) > 0 {
			req.Query[strings.ToValidUTF8(name, "\uFFFD")] = strings.ToValidUTF8(values[0], "\uFFFD")
		}
	}
	if isJSON(r.Header.Get("Content-Type")) {
		if len(body) == 0 {
			return req, nil
		}
		if err := json.Unmarshal(body, &req.Body); err != nil {
			return nil, fail(http.StatusBadRequest, "invalid", "request body: Content-Type says JSON but it is not: %v", err)
		}
		return req, nil
	}
	if utf8.Valid(body) {
		req.Body = string(body)
	} else {
		req.Body = strings.ToValidUTF8(string(body), "\uFFFD")
	}
	return req, nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
