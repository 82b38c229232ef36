package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/casarerpa/casare/server/event"
)

// webhookReceiver is a real HTTP server standing in for a system that
// subscribes to events: it checks each delivery's Standard Webhooks
// signature as a receiver would and keeps the events that verify, once
// per webhook-id, as receivers dedupe.
type webhookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// secret is the subscription's, set once it is created.
	secret   string
	events   []receivedEvent
	seen     map[string]bool
	times    map[string]int // deliveries of each webhook-id
	rejected []string
}

type receivedEvent struct {
	ID, Type string
	Body     []byte
}

func (rc *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rc.mu.Lock()
	defer rc.mu.Unlock()
	id := r.Header.Get(event.HeaderID)
	err := event.Verify(rc.secret, id, r.Header.Get(event.HeaderTimestamp), r.Header.Get(event.HeaderSignature), body, time.Now(), 5*time.Minute)
	if err != nil {
		rc.rejected = append(rc.rejected, err.Error())
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var env struct {
		Type string `json:"type"`
	}
	json.Unmarshal(body, &env)
	rc.times[id]++
	if !rc.seen[id] {
		rc.seen[id] = true
		rc.events = append(rc.events, receivedEvent{ID: id, Type: env.Type, Body: body})
	}
	w.WriteHeader(http.StatusNoContent)
}

// cmdReceiver drives the script's webhook receiver:
//
//	receiver start              start it; sets RECEIVER to its URL
//	receiver secret FILE        verify signatures with the secret in FILE
//	receiver wait TYPE N        wait (30s at most) for N events of TYPE
//	receiver last TYPE NAME     set NAME to the id of the last event of TYPE
//	                            and write its body to TYPE.json
//	receiver times ID N         wait (30s at most) for the event ID to have
//	                            come N times (redeliveries)
func cmdReceiver(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: receiver start|secret|wait|last …")
	}
	holder := ts.Value("receiver").(*receiverHolder)
	rc := holder.rc
	if args[0] != "start" && rc == nil {
		ts.Fatalf("receiver %s: no receiver started", args[0])
	}
	switch {
	case args[0] == "start" && len(args) == 1:
		rc = &webhookReceiver{seen: map[string]bool{}, times: map[string]int{}}
		rc.srv = httptest.NewServer(rc)
		ts.Defer(rc.srv.Close)
		holder.rc = rc
		ts.Setenv("RECEIVER", rc.srv.URL)
	case args[0] == "secret" && len(args) == 2:
		line, _, _ := strings.Cut(ts.ReadFile(args[1]), "\n")
		rc.mu.Lock()
		rc.secret = strings.TrimSpace(line)
		rc.mu.Unlock()
	case args[0] == "wait" && len(args) == 3:
		want, err := strconv.Atoi(args[2])
		ts.Check(err)
		deadline := time.Now().Add(30 * time.Second)
		for {
			n, rejected := rc.count(args[1])
			if n >= want {
				return
			}
			if time.Now().After(deadline) {
				ts.Fatalf("after 30s the receiver has %d %s events, want %d; signatures refused: %v", n, args[1], want, rejected)
			}
			time.Sleep(20 * time.Millisecond)
		}
	case args[0] == "times" && len(args) == 3:
		want, err := strconv.Atoi(args[2])
		ts.Check(err)
		deadline := time.Now().Add(30 * time.Second)
		for {
			rc.mu.Lock()
			n := rc.times[args[1]]
			rc.mu.Unlock()
			if n >= want {
				return
			}
			if time.Now().After(deadline) {
				ts.Fatalf("after 30s event %s came %d times, want %d", args[1], n, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	case args[0] == "last" && len(args) == 3:
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for i := len(rc.events) - 1; i >= 0; i-- {
			if rc.events[i].Type == args[1] {
				ts.Setenv(args[2], rc.events[i].ID)
				ts.Check(os.WriteFile(ts.MkAbs(args[1]+".json"), rc.events[i].Body, 0o644))
				return
			}
		}
		ts.Fatalf("the receiver has no %s event", args[1])
	default:
		ts.Fatalf("usage: receiver start|secret FILE|wait TYPE N|last TYPE NAME")
	}
}

func (rc *webhookReceiver) count(typ string) (int, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, e := range rc.events {
		if e.Type == typ {
			n++
		}
	}
	return n, rc.rejected
}

// receiverHolder carries a script's receiver between its commands.
type receiverHolder struct{ rc *webhookReceiver }
