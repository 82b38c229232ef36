package robot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// How long the robot waits for the control plane's answer to an artifact
// before it sends the artifact again, and for a new try after a failure.
const (
	artifactAnswerWait = time.Minute
	artifactRetryWait  = time.Second
)

// uploads holds the artifacts sent and waiting for the control plane's
// answer (artifact_stored on the control stream). The zero value is ready.
type uploads struct {
	mu      sync.Mutex
	waiting map[uploadKey][]chan *agentv1.ArtifactStored
}

// uploadKey names one artifact's content: answers about other bytes of the
// same name are not this upload's.
type uploadKey struct {
	jobID   string
	attempt int32
	name    string
	sha256  string
}

// wait registers for answers about key; done unregisters.
func (u *uploads) wait(key uploadKey) (answers <-chan *agentv1.ArtifactStored, done func()) {
	ch := make(chan *agentv1.ArtifactStored, 1)
	u.mu.Lock()
	if u.waiting == nil {
		u.waiting = map[uploadKey][]chan *agentv1.ArtifactStored{}
	}
	u.waiting[key] = append(u.waiting[key], ch)
	u.mu.Unlock()
	return ch, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		list := u.waiting[key]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(u.waiting, key)
		} else {
			u.waiting[key] = list
		}
	}
}

// deliver hands an answer to the uploads waiting for it. An answer nobody
// waits for (to a send already made good by another) is dropped.
func (u *uploads) deliver(a *agentv1.ArtifactStored) {
	key := uploadKey{a.GetJobId(), a.GetAttempt(), a.GetName(), string(a.GetSha256())}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, ch := range u.waiting[key] {
		select {
		case ch <- a:
		default:
		}
	}
}

// artifactSaver returns the job's step.Env SaveArtifact: it sends the
// artifact on a stream of its own and returns once the control plane has
// stored it. A connection lost on the way is waited out and the artifact
// sent again on the next; it fails when the job ends first, or when the
// control plane refuses the artifact (a limit, or the job is no longer
// this robot's).
func (r *runner) artifactSaver(ctx context.Context, j *job) func(name, contentType string, data []byte) error {
	return func(name, contentType string, data []byte) error {
		return r.saveArtifact(ctx, j, name, contentType, data)
	}
}

func (r *runner) saveArtifact(ctx context.Context, j *job, name, contentType string, data []byte) error {
	sum := sha256.Sum256(data)
	hdr := &agentv1.ArtifactHeader{
		JobId: j.id, Attempt: j.attempt, Name: name, ContentType: contentType,
		Size: int64(len(data)), Sha256: sum[:],
	}
	if err := agentv1.CheckArtifactHeader(hdr); err != nil {
		return err
	}
	answers, done := r.uploads.wait(uploadKey{j.id, j.attempt, name, string(sum[:])})
	defer done()
	ended := func() error {
		return fmt.Errorf("artifact %q: the job ended before the control plane stored it (%v)", name, context.Cause(ctx))
	}
	for {
		r.mu.Lock()
		l, changed := r.link, r.linkChanged
		r.mu.Unlock()
		if l == nil {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return ended()
			}
		}
		if err := sendArtifact(ctx, l, hdr, data); err != nil {
			if ctx.Err() != nil {
				return ended()
			}
			r.log.Debug("send an artifact; trying again", "job", j.id, "artifact", name, "err", err)
			select {
			case <-changed:
			case <-time.After(artifactRetryWait):
			case <-ctx.Done():
				return ended()
			}
			continue
		}
		select {
		case a := <-answers:
			switch {
			case a.GetError() == "":
				return nil
			case !a.GetTemporary():
				return fmt.Errorf("artifact %q: the control plane refused it: %s", name, a.GetError())
			}
			r.log.Warn("the control plane could not store an artifact; trying again", "job", j.id, "artifact", name, "err", a.GetError())
			select {
			case <-time.After(artifactRetryWait):
			case <-ctx.Done():
				return ended()
			}
		case <-changed:
			// The answer may have been lost with the connection: send
			// again on the next. The control plane keeps one copy.
		case <-time.After(artifactAnswerWait):
		case <-ctx.Done():
			return ended()
		}
	}
}

// sendArtifact writes the artifact on a new stream of the connection. A job
// that ends meanwhile stops the write.
func sendArtifact(ctx context.Context, l *link, hdr *agentv1.ArtifactHeader, data []byte) error {
	openCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := l.conn.OpenUniStreamSync(openCtx)
	cancel()
	if err != nil {
		return err
	}
	// The cancel runs on a goroutine of its own: it is waited for, so
	// nothing touches the stream once the send returns.
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		s.CancelWrite(0)
		close(cancelled)
	})
	defer func() {
		if !stop() {
			<-cancelled
		}
	}()
	if err := agentv1.WriteArtifact(s, hdr, data); err != nil {
		s.CancelWrite(0)
		return err
	}
	if ctx.Err() != nil {
		return errors.New("the job ended")
	}
	return s.Close()
}
