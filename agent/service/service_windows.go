//go:build windows

package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// recovery is what the Service Control Manager does when the agent
// exits with an error: start it again, after longer waits, and forget
// the failures after a day without one.
var recovery = []mgr.RecoveryAction{
	{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 2 * time.Minute},
}

const recoveryReset = 24 * 60 * 60 // seconds

func connect() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if err != nil {
		return nil, fmt.Errorf("connect to the Service Control Manager (run as Administrator): %w", err)
	}
	return m, nil
}

func open(name string) (*mgr.Mgr, *mgr.Service, error) {
	if name == "" {
		name = DefaultName
	}
	m, err := connect()
	if err != nil {
		return nil, nil, err
	}
	s, err := m.OpenService(name)
	if err != nil {
		m.Disconnect()
		if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
			return nil, nil, fmt.Errorf("service %s is not installed; see casare-agent service install", name)
		}
		return nil, nil, fmt.Errorf("open service %s: %w", name, err)
	}
	return m, s, nil
}

// Install registers the service to start at boot (delayed, after the
// network), restart after failures, and log to the event log under its
// name.
func Install(c Config) error {
	if err := c.Check(); err != nil {
		return err
	}
	m, err := connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(c.Name); err == nil {
		s.Close()
		return fmt.Errorf("service %s is already installed; uninstall it first to change it", c.Name)
	}
	s, err := m.CreateService(c.Name, c.Exe, mgr.Config{
		DisplayName:      c.DisplayName,
		Description:      "Runs CasareRPA jobs for the control plane it enrolled with.",
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true,
	}, c.CommandLine()...)
	if err != nil {
		return fmt.Errorf("create service %s: %w", c.Name, err)
	}
	defer s.Close()
	undo := func(cause error) error {
		s.Delete()
		return cause
	}
	if err := s.SetRecoveryActions(recovery, recoveryReset); err != nil {
		return undo(fmt.Errorf("service %s: set recovery actions: %w", c.Name, err))
	}
	// A robot refused for good exits 3 rather than crashing: that is a
	// failure the manager should act on too.
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return undo(fmt.Errorf("service %s: set recovery on exit codes: %w", c.Name, err))
	}
	if err := eventlog.InstallAsEventCreate(c.Name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil &&
		!strings.Contains(err.Error(), "exists") {
		return undo(fmt.Errorf("service %s: register the event log source: %w", c.Name, err))
	}
	return nil
}

// Uninstall stops the service if it runs and removes it and its event
// log source.
func Uninstall(name string) error {
	m, s, err := open(name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State != svc.Stopped {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := stop(ctx, s); err != nil {
			return err
		}
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("delete service %s: %w", s.Name, err)
	}
	if err := eventlog.Remove(s.Name); err != nil {
		return fmt.Errorf("service %s removed; its event log source was not: %w", s.Name, err)
	}
	return nil
}

// Start asks the manager to start the service.
func Start(name string) error {
	m, s, err := open(name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if err := s.Start(); err != nil {
		return fmt.Errorf("start service %s: %w", s.Name, err)
	}
	return nil
}

// Stop asks the service to stop and waits, until ctx ends, while it
// drains its running jobs.
func Stop(ctx context.Context, name string) error {
	m, s, err := open(name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	return stop(ctx, s)
}

func stop(ctx context.Context, s *mgr.Service) error {
	st, err := s.Control(svc.Stop)
	if err != nil {
		return fmt.Errorf("stop service %s: %w", s.Name, err)
	}
	for st.State != svc.Stopped {
		select {
		case <-ctx.Done():
			return fmt.Errorf("service %s is still %s: %w", s.Name, stateName(st.State), ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
		if st, err = s.Query(); err != nil {
			return fmt.Errorf("query service %s: %w", s.Name, err)
		}
	}
	return nil
}

// Status prints the service's state, process and command line.
func Status(w io.Writer, name string) error {
	m, s, err := open(name)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return fmt.Errorf("query service %s: %w", s.Name, err)
	}
	cfg, err := s.Config()
	if err != nil {
		return fmt.Errorf("read service %s: %w", s.Name, err)
	}
	fmt.Fprintf(w, "service:  %s (%s)\nstate:    %s\n", s.Name, cfg.DisplayName, stateName(st.State))
	if st.ProcessId != 0 {
		fmt.Fprintf(w, "pid:      %d\n", st.ProcessId)
	}
	fmt.Fprintf(w, "command:  %s\n", cfg.BinaryPathName)
	return nil
}

func stateName(s svc.State) string {
	switch s {
	case svc.Stopped:
		return "stopped"
	case svc.StartPending:
		return "starting"
	case svc.StopPending:
		return "stopping"
	case svc.Running:
		return "running"
	case svc.ContinuePending, svc.PausePending, svc.Paused:
		return "paused"
	}
	return fmt.Sprintf("state %d", s)
}

// Running says whether the Service Control Manager started this process.
func Running() bool {
	yes, err := svc.IsWindowsService()
	return err == nil && yes
}

// Run runs the robot under the Service Control Manager: run gets a
// logger that writes to the event log and a context that ends on stop
// or system shutdown, and the service ends with the exit code exitCode
// gives its error.
func Run(name string, exitCode func(error) int, run func(context.Context, *slog.Logger) error) error {
	el, err := eventlog.Open(name)
	if err != nil {
		return fmt.Errorf("open the event log as %s: %w", name, err)
	}
	defer el.Close()
	buf := new(bytes.Buffer)
	logger := slog.New(&eventLogHandler{log: el, mu: new(sync.Mutex), buf: buf, inner: slog.NewTextHandler(buf, nil)})
	return svc.Run(name, &handler{run: run, exitCode: exitCode, logger: logger})
}

type handler struct {
	run      func(context.Context, *slog.Logger) error
	exitCode func(error) int
	logger   *slog.Logger
}

// Execute reports running at once, and on stop keeps telling the manager
// the service is stopping while the robot drains, which may take up to
// its drain timeout.
func (h *handler) Execute(_ []string, requests <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx, h.logger) }()
	running := svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	status <- running
	var pending <-chan time.Time
	checkpoint := uint32(0)
	for {
		select {
		case req := <-requests:
			switch req.Cmd {
			case svc.Interrogate:
				status <- req.CurrentStatus
			case svc.Stop, svc.Shutdown:
				if pending != nil {
					break // already stopping
				}
				cancel()
				checkpoint++
				status <- svc.Status{State: svc.StopPending, CheckPoint: checkpoint, WaitHint: 30_000}
				tick := time.NewTicker(10 * time.Second)
				defer tick.Stop()
				pending = tick.C
			}
		case <-pending:
			checkpoint++
			status <- svc.Status{State: svc.StopPending, CheckPoint: checkpoint, WaitHint: 30_000}
		case err := <-done:
			if err != nil {
				h.logger.Error("robot stopped", "err", err)
				if code := h.exitCode(err); code != 0 {
					return true, uint32(code)
				}
			}
			return false, 0
		}
	}
}

// eventLogHandler writes each record as one text line to the event log,
// at the record's level.
type eventLogHandler struct {
	log   *eventlog.Log
	mu    *sync.Mutex
	buf   *bytes.Buffer
	inner slog.Handler
}

func (h *eventLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *eventLogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	msg := strings.TrimSpace(h.buf.String())
	switch {
	case r.Level >= slog.LevelError:
		return h.log.Error(1, msg)
	case r.Level >= slog.LevelWarn:
		return h.log.Warning(1, msg)
	}
	return h.log.Info(1, msg)
}

func (h *eventLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &eventLogHandler{log: h.log, mu: h.mu, buf: h.buf, inner: h.inner.WithAttrs(attrs)}
}

func (h *eventLogHandler) WithGroup(name string) slog.Handler {
	return &eventLogHandler{log: h.log, mu: h.mu, buf: h.buf, inner: h.inner.WithGroup(name)}
}
