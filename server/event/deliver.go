package event

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/casarerpa/casare/server/registry"
)

// Store is the registry as deliveries use it.
type Store interface {
	DueSubscriptions(ctx context.Context, now time.Time) ([]string, error)
	ClaimDeliveries(ctx context.Context, subscriptionID, owner string, now time.Time, lease time.Duration, limit int) ([]registry.Claim, error)
	FixPayloads(ctx context.Context, payloads map[int64]string) (map[int64]string, error)
	FinishDeliveries(ctx context.Context, outcomes []registry.Outcome) (disabled *registry.Subscription, held int, err error)
	CountPendingDeliveries(ctx context.Context) (int, error)
	AppendWaitingJobEvents(ctx context.Context, olderThan time.Time, limit int) (int, error)
	PruneEvents(ctx context.Context, before time.Time, limit int) (int, error)
}

// Render returns the data of an event's payload: the resource as the API
// shows it, e.g. {"job": {…}}.
type Render func(ctx context.Context, e *registry.Event) (json.RawMessage, error)

// Options configures a Service. Zero durations and counts take the
// defaults beside them.
type Options struct {
	Store  Store
	Render Render
	Logger *slog.Logger
	// Client sends the deliveries; nil means one that follows no redirect.
	Client *http.Client
	// PollInterval is how often due deliveries are looked for (250ms).
	PollInterval time.Duration
	// AttemptTimeout bounds one try (10s).
	AttemptTimeout time.Duration
	// Concurrency is how many deliveries to one subscription are in flight
	// at once on this replica (8).
	Concurrency int
	// InitialBackoff and MaxBackoff bound the wait before a retry, which
	// doubles each try, with jitter (5s, 1h).
	InitialBackoff, MaxBackoff time.Duration
	// MaxAge is how long after its event a delivery is tried (24h).
	MaxAge time.Duration
	// MaxFailures disables a subscription after that many failed tries
	// in a row (50).
	MaxFailures int32
	// WaitingAfter is how long a job may wait pending before a job.waiting
	// event; 0 sends none.
	WaitingAfter time.Duration
	// KeepEvents is how long an event and its delivery history are kept
	// once nothing is left to deliver (7 days).
	KeepEvents time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service delivers events. Start runs it; Stop ends it.
type Service struct {
	opts Options
	// owner names this replica's leases.
	owner string
	wake  chan struct{}

	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
	collectors []prometheus.Collector

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a stopped service.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Client == nil {
		opts.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	opts.PollInterval = or(opts.PollInterval, 250*time.Millisecond)
	opts.AttemptTimeout = or(opts.AttemptTimeout, 10*time.Second)
	opts.InitialBackoff = or(opts.InitialBackoff, 5*time.Second)
	opts.MaxBackoff = or(opts.MaxBackoff, time.Hour)
	opts.MaxAge = or(opts.MaxAge, 24*time.Hour)
	opts.Concurrency = or(opts.Concurrency, 8)
	opts.MaxFailures = or(opts.MaxFailures, 50)
	opts.KeepEvents = or(opts.KeepEvents, 7*24*time.Hour)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{opts: opts, owner: registry.NewID(), wake: make(chan struct{}, 1)}
	s.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "casare_webhook_deliveries_total",
		Help: "Tries to deliver an event to a subscription, by outcome: delivered, retry (failed, tried again later) or failed (given up).",
	}, []string{"outcome"})
	// Every outcome is exported from the start, so a rate over it reads 0
	// rather than nothing before the first delivery.
	for _, o := range []string{"delivered", "retry", "failed"} {
		s.deliveries.WithLabelValues(o)
	}
	s.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "casare_webhook_delivery_duration_seconds",
		Help:    "Time from sending an event to the receiver's answer (or the timeout).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "casare_webhook_outbox_pending",
		Help: "Event deliveries to enabled subscriptions not made yet; -1 when the database did not answer.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := opts.Store.CountPendingDeliveries(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	s.collectors = []prometheus.Collector{s.deliveries, s.latency, pending}
	return s
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Collectors returns the service's metrics.
func (s *Service) Collectors() []prometheus.Collector { return s.collectors }

// Wake looks for due deliveries now rather than at the next poll, after a
// change that queued one (a test ping, a redelivery).
func (s *Service) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Start runs the service until Stop.
func (s *Service) Start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		s.run(ctx)
	}()
}

// Stop ends the service and returns once nothing of it writes. A try in
// flight is cut off and records nothing: its lease runs out and it is
// tried again, here or on another replica.
func (s *Service) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	// Kept-alive connections to receivers hold goroutines of their own.
	s.opts.Client.CloseIdleConnections()
}

// run starts a lane for each subscription with deliveries due and none
// running here, and each WaitingAfter/4 writes the job.waiting events due.
// It owns lanes: lanes tell it through laneDone that they ended.
func (s *Service) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	lanes := map[string]bool{}
	laneDone := make(chan string)
	poll := time.NewTicker(s.opts.PollInterval)
	defer poll.Stop()
	prune := time.NewTicker(pruneInterval)
	defer prune.Stop()
	var waiting <-chan time.Time
	if s.opts.WaitingAfter > 0 {
		t := time.NewTicker(max(s.opts.WaitingAfter/4, time.Second))
		defer t.Stop()
		waiting = t.C
	}
	for {
		due, err := s.opts.Store.DueSubscriptions(ctx, s.opts.Now())
		if err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("event deliveries: look for due deliveries", "err", err)
		}
		for _, id := range due {
			if lanes[id] {
				continue
			}
			lanes[id] = true
			wg.Go(func() {
				s.lane(ctx, id)
				select {
				case laneDone <- id:
				case <-ctx.Done():
				}
			})
		}
		// A lane that ended lets the next poll start another: a
		// subscription whose due deliveries all wait behind earlier ones
		// of their resources costs a claim a poll, not a busy loop.
	idle:
		for {
			select {
			case <-ctx.Done():
				return
			case id := <-laneDone:
				delete(lanes, id)
			case <-poll.C:
				break idle
			case <-s.wake:
				break idle
			case <-waiting:
				s.appendWaiting(ctx)
				break idle
			case <-prune.C:
				s.prune(ctx)
			}
		}
	}
}

// pruneInterval is how often old events are removed.
const pruneInterval = time.Hour

// prune removes the events older than KeepEvents that have nothing left to
// deliver, a batch at a time.
func (s *Service) prune(ctx context.Context) {
	total := 0
	for ctx.Err() == nil {
		n, err := s.opts.Store.PruneEvents(ctx, s.opts.Now().Add(-s.opts.KeepEvents), 1000)
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Warn("event deliveries: prune old events", "err", err)
			}
			break
		}
		total += n
		if n < 1000 {
			break
		}
	}
	if total > 0 {
		s.opts.Logger.Info("pruned delivered events", "events", total, "older_than", s.opts.KeepEvents)
	}
}

func (s *Service) appendWaiting(ctx context.Context) {
	n, err := s.opts.Store.AppendWaitingJobEvents(ctx, s.opts.Now().Add(-s.opts.WaitingAfter), 500)
	if err != nil && ctx.Err() == nil {
		s.opts.Logger.Warn("event deliveries: job.waiting events", "err", err)
	}
	if n > 0 {
		s.opts.Logger.Info("jobs waiting too long", "jobs", n, "after", s.opts.WaitingAfter)
	}
}

// lane delivers a subscription's due deliveries until none is due: two
// batch loops share its Concurrency slots, so that one's round trips to
// the database overlap the other's sends. A receiver that hangs holds its
// own lane only.
func (s *Service) lane(ctx context.Context, subscriptionID string) {
	slots := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { s.batches(ctx, subscriptionID, slots) })
	}
	wg.Wait()
}

// batches claims a batch, sends it taking slots, and records the outcomes
// in one commit, until none is due.
func (s *Service) batches(ctx context.Context, subscriptionID string, slots chan struct{}) {
	for ctx.Err() == nil {
		claims, err := s.opts.Store.ClaimDeliveries(ctx, subscriptionID, s.owner, s.opts.Now(), s.lease(), s.batch())
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Warn("event deliveries: claim", "subscription", subscriptionID, "err", err)
			}
			return
		}
		if len(claims) == 0 {
			return
		}
		s.fixPayloads(ctx, claims)
		var mu sync.Mutex
		var ended []registry.Outcome // in the order the tries ended
		var wg sync.WaitGroup
	send:
		for i := range claims {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				break send
			}
			wg.Go(func() {
				defer func() { <-slots }()
				o := s.try(ctx, &claims[i])
				mu.Lock()
				ended = append(ended, o)
				mu.Unlock()
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return // stopping: the leases run out and the deliveries are tried again
		}
		disabled, held, err := s.opts.Store.FinishDeliveries(ctx, ended)
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Warn("event deliveries: record tries", "subscription", subscriptionID, "err", err)
			}
			return
		}
		if held < len(ended) {
			// Their leases ran out and another worker has them; its
			// outcomes count.
			s.opts.Logger.Warn("event deliveries: tries outlived their lease", "subscription", subscriptionID, "tries", len(ended)-held)
		}
		for _, o := range ended {
			s.deliveries.WithLabelValues(outcomeLabel(o)).Inc()
		}
		if disabled != nil {
			s.opts.Logger.Warn("webhook subscription disabled", "subscription", disabled.Name, "reason", disabled.DisabledReason)
			return
		}
	}
}

func outcomeLabel(o registry.Outcome) string {
	switch {
	case o.Delivered:
		return "delivered"
	case o.RetryAt.IsZero():
		return "failed"
	}
	return "retry"
}

// batch is how many deliveries a batch loop claims at once.
func (s *Service) batch() int { return 4 * s.opts.Concurrency }

// lease is how long a claim keeps other workers off: past the tries of a
// whole batch, each up to its timeout, while the lane's other batch takes
// slots too, and the writing of their outcomes.
func (s *Service) lease() time.Duration {
	return time.Duration(2*s.batch()/s.opts.Concurrency)*s.opts.AttemptTimeout + 30*time.Second
}

// envelope is the body of every delivery.
type envelope struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// fixPayloads renders the bodies of the claimed events that have none
// yet and stores them, all in one commit. An event that cannot be
// rendered now keeps no body; its try fails and is retried.
func (s *Service) fixPayloads(ctx context.Context, claims []registry.Claim) {
	rendered := map[int64]string{}
	for i := range claims {
		e := &claims[i].Event
		if e.Payload != "" {
			continue
		}
		if _, ok := rendered[e.Seq]; ok {
			continue
		}
		data, err := s.opts.Render(ctx, e)
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Warn("event deliveries: render event", "event", e.ID, "err", err)
			}
			continue
		}
		b, err := json.Marshal(envelope{ID: e.ID, Type: e.Type, Timestamp: e.Time.UTC().Format(time.RFC3339Nano), Data: data})
		if err != nil {
			continue
		}
		rendered[e.Seq] = string(b)
	}
	stored, err := s.opts.Store.FixPayloads(ctx, rendered)
	if err != nil {
		if ctx.Err() == nil {
			s.opts.Logger.Warn("event deliveries: store payloads", "err", err)
		}
		return
	}
	for i := range claims {
		if p, ok := stored[claims[i].Event.Seq]; ok {
			claims[i].Event.Payload = p
		}
	}
}

// try makes one try of a claimed delivery and says how it ended.
func (s *Service) try(ctx context.Context, c *registry.Claim) registry.Outcome {
	start := s.opts.Now()
	code, err := s.send(ctx, c)
	end := s.opts.Now()
	s.latency.Observe(end.Sub(start).Seconds())
	o := registry.Outcome{Claim: c, Owner: s.owner, At: end, StatusCode: int32(code), Latency: end.Sub(start),
		Delivered: err == nil, MaxFailures: s.opts.MaxFailures}
	if err != nil {
		o.Error = err.Error()
		if end.Sub(c.Event.Time) < s.opts.MaxAge {
			o.RetryAt = end.Add(s.backoff(c.Delivery.Attempts + 1))
		}
		s.opts.Logger.Debug("event delivery failed", "subscription", c.Subscription.Name, "event", c.Event.ID, "err", err)
	}
	return o
}

// send posts the event to the subscription's URL and returns the status
// code (0 when no answer came) and why it was not delivered, or nil.
func (s *Service) send(ctx context.Context, c *registry.Claim) (int, error) {
	if c.Event.Payload == "" {
		return 0, errors.New("the event's payload could not be rendered; see the server log")
	}
	body := []byte(c.Event.Payload)
	ctx, cancel := context.WithTimeout(ctx, s.opts.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Subscription.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("url: %w", err)
	}
	ts := s.opts.Now()
	sig, err := Sign(c.Subscription.Secret, c.Event.ID, ts, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "casare-webhooks/1")
	req.Header.Set(HeaderID, c.Event.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(HeaderSignature, sig)
	res, err := s.opts.Client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return 0, fmt.Errorf("no answer within %s", s.opts.AttemptTimeout)
		}
		return 0, err
	}
	// Read a little of the answer so the connection can be reused; a
	// receiver has nothing to say that we keep.
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, fmt.Errorf("HTTP %d", res.StatusCode)
	}
	return res.StatusCode, nil
}

// backoff is the wait before try n+1: InitialBackoff doubled each try up
// to MaxBackoff, a random half of it taken off so that deliveries failed
// together spread out.
func (s *Service) backoff(n int32) time.Duration {
	d := s.opts.InitialBackoff
	for i := int32(1); i < n && d < s.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.opts.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}
