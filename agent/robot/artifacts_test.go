package robot

import (
	"testing"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// TestUploadAnswers: an answer reaches the uploads of the same job,
// attempt, name and bytes, and no other.
func TestUploadAnswers(t *testing.T) {
	var u uploads
	key := uploadKey{"j1", 1, "shot.png", "sum-a"}
	first, doneFirst := u.wait(key)
	second, doneSecond := u.wait(key)
	defer doneSecond()
	otherBytes, doneOther := u.wait(uploadKey{"j1", 1, "shot.png", "sum-b"})
	defer doneOther()
	otherAttempt, doneAttempt := u.wait(uploadKey{"j1", 2, "shot.png", "sum-a"})
	defer doneAttempt()

	u.deliver(&agentv1.ArtifactStored{JobId: "j1", Attempt: 1, Name: "shot.png", Sha256: []byte("sum-a")})
	for name, ch := range map[string]<-chan *agentv1.ArtifactStored{"first": first, "second": second} {
		select {
		case a := <-ch:
			if a.GetError() != "" {
				t.Errorf("%s: %v", name, a)
			}
		case <-time.After(time.Second):
			t.Fatalf("%s upload got no answer", name)
		}
	}
	for name, ch := range map[string]<-chan *agentv1.ArtifactStored{"other bytes": otherBytes, "other attempt": otherAttempt} {
		select {
		case a := <-ch:
			t.Errorf("the %s upload took an answer not about it: %v", name, a)
		default:
		}
	}

	// An answer delivered twice (a send repeated after a reconnect) does
	// not block the control stream's reader.
	u.deliver(&agentv1.ArtifactStored{JobId: "j1", Attempt: 1, Name: "shot.png", Sha256: []byte("sum-a")})
	u.deliver(&agentv1.ArtifactStored{JobId: "j1", Attempt: 1, Name: "shot.png", Sha256: []byte("sum-a")})

	doneFirst()
	if n := len(u.waiting[key]); n != 1 {
		t.Fatalf("after one upload ended %d wait for its key, want 1", n)
	}
	doneSecond()
	if _, ok := u.waiting[key]; ok {
		t.Fatal("an ended upload is still registered")
	}
}
