package api

import (
	"sync"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// versionCache keeps decoded stored workflow versions by name and version.
// A stored version never changes, so an entry never goes stale; schedules
// and triggers that submit the same version many times a second read and
// decode it once. The decoded workflow is shared: nothing may change it.
type versionCache struct {
	mu      sync.Mutex
	entries map[versionKey]*casarev1.Workflow
}

type versionKey struct {
	name    string
	version int32
}

// maxCachedVersions bounds the cache; when full it starts again empty,
// which costs a read per version and no bookkeeping.
const maxCachedVersions = 512

func (c *versionCache) get(name string, version int32) *casarev1.Workflow {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[versionKey{name, version}]
}

func (c *versionCache) put(name string, version int32, wf *casarev1.Workflow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxCachedVersions {
		c.entries = make(map[versionKey]*casarev1.Workflow)
	}
	c.entries[versionKey{name, version}] = wf
}
