package dispatch

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestFreeRobotsOrder: whatever order robots come and go in, the list
// holds each free robot once, least recently busy first, ties by id.
func TestFreeRobotsOrder(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	var robots []*robot
	for i := range 200 {
		// Few distinct times, so ties by id are common.
		robots = append(robots, &robot{id: string(rune('a'+i%26)) + string(rune('a'+i/26)), lastBusy: base.Add(time.Duration(i%7) * time.Second)})
	}
	f := newFreeRobots()
	want := map[*robot]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		r := robots[rng.IntN(len(robots))]
		if rng.IntN(2) == 0 {
			f.add(r)
			want[r] = true
		} else {
			f.remove(r)
			delete(want, r)
		}
		if f.len() != len(want) {
			t.Fatalf("holds %d robots, want %d", f.len(), len(want))
		}
	}
	if !slices.IsSortedFunc(f.list, freeOrder) {
		t.Fatal("the free robots are out of order")
	}
	for _, r := range f.list {
		if !want[r] {
			t.Fatalf("robot %s is free but was removed", r.id)
		}
	}
	// A robot whose order changed while held still leaves.
	r := f.list[0]
	r.lastBusy = base.Add(time.Hour)
	f.remove(r)
	if slices.Contains(f.list, r) || f.has(r) {
		t.Fatal("a robot whose lastBusy changed while free stayed in the list")
	}
}

// TestPickTakesLeastRecentlyBusy: pick gives the first free robot that
// fits, in the order of freeRobots, skipping those the job avoids.
func TestPickTakesLeastRecentlyBusy(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	m := &matcher{free: newFreeRobots()}
	old := &robot{id: "old", lastBusy: base, labels: map[string]string{"site": "lab"}}
	mid := &robot{id: "mid", lastBusy: base.Add(time.Second), labels: map[string]string{"site": "hq"}}
	newer := &robot{id: "new", lastBusy: base.Add(2 * time.Second), labels: map[string]string{"site": "hq"}}
	for _, r := range []*robot{newer, old, mid} {
		m.free.add(r)
	}
	if got := m.pick(&pendingJob{}); got != old {
		t.Fatalf("picked %v, want the least recently busy robot", got.id)
	}
	hq := &pendingJob{req: Requirements{Labels: map[string]string{"site": "hq"}}}
	if got := m.pick(hq); got != mid {
		t.Fatalf("picked %v for site=hq, want mid", got.id)
	}
	hq.avoid = []string{"mid"}
	if got := m.pick(hq); got != newer {
		t.Fatalf("picked %v for site=hq avoiding mid, want new", got.id)
	}
	hq.avoid = []string{"mid", "new"}
	if got := m.pick(hq); got != nil {
		t.Fatalf("picked %v, want none", got.id)
	}
}
