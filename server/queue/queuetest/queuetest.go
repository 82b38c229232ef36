// Package queuetest gives tests the Redis they run against.
package queuetest

import (
	"fmt"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

// RedisURL returns CASARE_TEST_REDIS_URL pointed at database db. With the
// variable unset it skips the test, or fails it when CI is set: CI must not
// pass by skipping what it was meant to check.
func RedisURL(t testing.TB, db int) string {
	t.Helper()
	base := os.Getenv("CASARE_TEST_REDIS_URL")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CASARE_TEST_REDIS_URL is not set; CI needs Redis")
		}
		t.Skip("CASARE_TEST_REDIS_URL is not set")
	}
	opts, err := redis.ParseURL(base)
	if err != nil {
		t.Fatalf("CASARE_TEST_REDIS_URL: %v", err)
	}
	return fmt.Sprintf("redis://%s/%d", opts.Addr, db)
}
