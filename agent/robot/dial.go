package robot

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// A robot with several replicas to choose from does not dial them one by
// one: a frozen replica answers nothing, so each would cost the whole dial
// timeout. It starts the next dial when the one before has not answered
// within the stagger, as Happy Eyeballs (RFC 8305) does for addresses, and
// keeps the first handshake that completes.
const (
	minStagger = 300 * time.Millisecond
	maxStagger = 2 * time.Second
	dialWait   = 15 * time.Second
)

// stagger is how long one dial may go unanswered before the next starts:
// a few round trips of the last connection, so a slow link does not start
// a dial per replica before the first could answer.
func stagger(lastRTT time.Duration) time.Duration {
	return min(max(4*lastRTT, minStagger), maxStagger)
}

// dialFunc dials one replica; quic.DialAddr unless a test sets it.
type dialFunc func(ctx context.Context, t target) (*quic.Conn, error)

// dialed is the race's winner: the connection and the index of its target
// in the round.
type dialed struct {
	conn  *quic.Conn
	index int
}

// race dials the targets in order, starting each when the one before has
// been unanswered for step or has failed, and returns the first
// connection. Those that complete later are closed by a goroutine owned by
// wg, which the caller waits for. When all fail it returns the first
// target's error joined with the others, so the reason a robot logs names
// every replica it tried.
func race(ctx context.Context, wg *sync.WaitGroup, targets []target, step time.Duration, dial dialFunc) (dialed, error) {
	ctx, cancel := context.WithTimeout(ctx, dialWait)
	defer cancel()
	type result struct {
		dialed
		err error
	}
	results := make(chan result, len(targets))
	// dials ends with the last dial, so whoever waits for the losers
	// waits for the goroutines that dialled them too.
	var dials sync.WaitGroup
	started := 0
	start := func() {
		i := started
		started++
		dials.Go(func() {
			conn, err := dial(ctx, targets[i])
			results <- result{dialed{conn, i}, err}
		})
	}
	start()
	errs := make([]error, len(targets))
	failed := 0
	timer := time.NewTimer(step)
	defer timer.Stop()
	for {
		select {
		case res := <-results:
			if res.err == nil {
				cancel()
				// The losers still running give up on the cancel; one
				// that completed in the meantime is closed, not leaked.
				waiting := started - failed - 1
				wg.Go(func() {
					for range waiting {
						if late := <-results; late.err == nil {
							late.conn.CloseWithError(0, "another replica answered first")
						}
					}
					dials.Wait()
				})
				return res.dialed, nil
			}
			errs[res.index] = fmt.Errorf("%s: %w", targets[res.index].addr, res.err)
			failed++
			if failed == len(targets) {
				dials.Wait()
				if len(targets) == 1 {
					return dialed{}, res.err
				}
				return dialed{}, errors.Join(errs...)
			}
			if started < len(targets) {
				// A refused dial hands on at once, not after the stagger.
				start()
				timer.Reset(step)
			}
		case <-timer.C:
			if started < len(targets) {
				start()
				timer.Reset(step)
			}
		}
	}
}

// quicDial dials one replica with the robot's certificate, naming the
// certificate the replica must present.
func quicDial(tlsConf *tls.Config, conf *quic.Config) dialFunc {
	return func(ctx context.Context, t target) (*quic.Conn, error) {
		c := tlsConf.Clone()
		c.ServerName = t.serverName
		return quic.DialAddr(ctx, t.addr, c, conf)
	}
}
