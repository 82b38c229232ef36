package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/casarerpa/casare/agent/step"
)

// resourceKey is the name of the job's browser among its resources.
const resourceKey = "browser"

// session is the job's browser: one Chromium process with one tab, a fresh
// profile directory, and the lock that keeps steps (parallel foreach
// iterations) from driving the tab at the same time.
type session struct {
	tab context.Context
	// kill cancels the root of the browser's contexts without waiting, which
	// kills the process; cancelTab and cancelAlloc then wait for it to exit
	// and for its profile directory to be removed.
	kill        context.CancelFunc
	cancelTab   context.CancelFunc
	cancelAlloc context.CancelFunc

	busy      chan struct{}
	dead      atomic.Bool
	closeOnce sync.Once
	// shots counts screenshots named by default.
	shots atomic.Int64
}

// start launches the browser and opens its tab. The browser's life is not
// the step's: it lasts until Close (the job ended, browser.close, or a
// cancelled step), so a step's own timeout ending does not take the page
// away from the next step. The step's context and limit bound only the
// launch.
func start(ctx context.Context, cfg Config, env *step.Env, limit time.Duration) (*session, error) {
	path := cfg.Chromium
	if path == "" {
		found := candidates()
		if len(found) == 0 {
			return nil, fmt.Errorf("no chromium on this robot: looked for %s on PATH", strings.Join(binaryNames, ", "))
		}
		path = found[0]
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path),
		// chromedp makes a fresh profile directory for each browser and
		// removes it, after killing any helper still using it, once the
		// process exits.
		chromedp.Flag("no-sandbox", needsNoSandbox()),
		// Containers give /dev/shm 64 MB, which a few pages fill.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 800),
	)
	if !cfg.Headless {
		if hasDisplay() {
			opts = append(opts, chromedp.VisibleWindow)
		} else {
			env.Logf("warn", "browser: no display to show a window on; running headless")
		}
	}
	root, kill := context.WithCancel(context.Background())
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	tab, cancelTab := chromedp.NewContext(allocCtx)
	s := &session{tab: tab, kill: kill, cancelTab: cancelTab, cancelAlloc: cancelAlloc, busy: make(chan struct{}, 1)}

	stopOnCancel := context.AfterFunc(ctx, kill)
	launchTimer := time.AfterFunc(limit, kill)
	err := chromedp.Do(tab)
	stopOnCancel()
	timedOut := !launchTimer.Stop()
	if err != nil {
		s.Close()
		switch {
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case timedOut:
			return nil, fmt.Errorf("start %s: not ready within %s", path, limit)
		}
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	if p := s.process(); p != nil {
		env.Logf("debug", "browser: started %s (pid %d)", path, p.Pid)
	}
	return s, nil
}

// hasDisplay reports whether a window can be shown. Only Linux can lack
// one (a service, a container); Windows and macOS robots run in a desktop
// session.
func hasDisplay() bool {
	if runtime.GOOS != "linux" {
		return true
	}
	return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
}

// alive reports whether the browser still runs: nothing closed it and
// chromedp has not lost it (a crash cancels the tab's context).
func (s *session) alive() bool {
	return !s.dead.Load() && s.tab.Err() == nil
}

// process is the browser's main process, nil before it started.
func (s *session) process() *os.Process {
	if c := chromedp.FromContext(s.tab); c != nil && c.Browser != nil {
		return c.Browser.Process()
	}
	return nil
}

// Close kills the browser, waits for it to exit and for its profile
// directory to be removed. It is safe to call more than once and from
// several goroutines; later calls wait for the first to finish.
func (s *session) Close() error {
	s.closeOnce.Do(func() {
		s.dead.Store(true)
		s.kill()
		s.cancelTab()
		s.cancelAlloc()
	})
	return nil
}

var _ io.Closer = (*session)(nil)

// errBrowserClosed says the browser went away under a step.
var errBrowserClosed = errors.New("the browser was closed")

// turn is one action's use of the job's browser: the browser and the
// moment the action's time is up, counted from before the browser was
// started, so that a step that launches the browser stays within its
// timeout.
type turn struct {
	*session
	deadline time.Time
}

func (t turn) do(ctx context.Context, f func(ctx context.Context) error) error {
	return t.session.do(ctx, t.deadline, f)
}

// acquire returns the job's browser, starting it if the job has none or
// its browser was closed (by browser.close or a cancelled step).
func (a *actions) acquire(ctx context.Context, env *step.Env, limit time.Duration) (turn, error) {
	deadline := time.Now().Add(limit)
	for range 3 {
		r, err := env.Resource(resourceKey, func() (io.Closer, error) {
			return start(ctx, a.cfg, env, limit)
		})
		if err != nil {
			return turn{}, err
		}
		s, ok := r.(*session)
		if !ok {
			return turn{}, fmt.Errorf("the job's %q resource is a %T, not a browser", resourceKey, r)
		}
		if s.alive() {
			return turn{s, deadline}, nil
		}
		// Closed, or crashed: clear up what is left and start anew.
		s.Close()
		env.Forget(resourceKey)
	}
	return turn{}, errors.New("the browser keeps closing as it starts")
}

// do runs f against the tab until the deadline. Steps take turns on
// the tab. When the step's context is cancelled (the job was cancelled or
// the robot is draining) the browser is killed there and then, rather than
// left running until the robot closes the job; when the step merely runs
// out of time the browser stays for the next step, since a retry or an
// error handler may still need the page.
func (s *session) do(ctx context.Context, deadline time.Time, f func(ctx context.Context) error) error {
	actx, cancel := context.WithDeadline(s.tab, deadline)
	defer cancel()
	// Waiting for another step (a parallel foreach iteration) to finish
	// with the tab counts against this step's time.
	select {
	case s.busy <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-actx.Done():
		if !s.alive() {
			return errBrowserClosed
		}
		return context.DeadlineExceeded
	}
	defer func() { <-s.busy }()
	if !s.alive() {
		return errBrowserClosed
	}
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			s.Close()
		}
		cancel()
	})
	err := f(actx)
	if !stop() {
		// The step ended while f ran: wait for the kill to finish so that
		// the browser is gone when the step returns.
		if errors.Is(ctx.Err(), context.Canceled) {
			s.Close()
		}
		return context.Cause(ctx)
	}
	if err != nil && !s.alive() {
		return errBrowserClosed
	}
	return err
}
