package dispatch

import (
	"slices"
	"strings"
)

// freeRobots holds the robots with a free slot in the order work goes to
// them: the one given work least recently first, ties by id. A job picks
// the first that fits, so the usual job (one every robot can run) costs a
// look at one robot rather than at the whole fleet; adding and removing
// move at most the list's pointers. A robot's lastBusy must not change
// while it is held here (see matcher.reserve).
type freeRobots struct {
	list []*robot
	in   map[*robot]struct{}
}

func newFreeRobots() freeRobots { return freeRobots{in: map[*robot]struct{}{}} }

func freeOrder(a, b *robot) int {
	if c := a.lastBusy.Compare(b.lastBusy); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

func (f *freeRobots) has(r *robot) bool {
	_, ok := f.in[r]
	return ok
}

func (f *freeRobots) add(r *robot) {
	if f.has(r) {
		return
	}
	i, _ := slices.BinarySearchFunc(f.list, r, freeOrder)
	f.list = slices.Insert(f.list, i, r)
	f.in[r] = struct{}{}
}

func (f *freeRobots) remove(r *robot) {
	if !f.has(r) {
		return
	}
	delete(f.in, r)
	i, found := slices.BinarySearchFunc(f.list, r, freeOrder)
	// Two robots may share lastBusy and id only if they are one robot
	// replaced by its new connection; find this one among its equals.
	for ; found && i < len(f.list) && f.list[i] != r; i++ {
	}
	if i < len(f.list) && f.list[i] == r {
		f.list = slices.Delete(f.list, i, i+1)
		return
	}
	// Not where its order says: its lastBusy changed while it was held.
	// Keep the list whole rather than leave it behind.
	f.list = slices.DeleteFunc(f.list, func(x *robot) bool { return x == r })
}

func (f *freeRobots) len() int { return len(f.list) }
