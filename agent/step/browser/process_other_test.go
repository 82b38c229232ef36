//go:build !linux

package browser

import (
	"context"
	"testing"
)

// testLifecycle runs the steps that end and restart the job's browser.
// Checking that the process is gone reads /proc, so only Linux checks it.
func testLifecycle(t *testing.T, b *bundle) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.run(t, ctx, "browser.wait_for", map[string]any{"selector": "#never"}); err == nil {
		t.Error("a cancelled wait succeeded")
	}
	b.must(t, "browser.open", nil)
	b.must(t, "browser.close", nil)
	b.must(t, "browser.navigate", map[string]any{"url": "data:text/html,x"})
	if err := b.env.Close(); err != nil {
		t.Fatal(err)
	}
}
