package registry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestEnrollRobot(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		now := time.Now()
		for _, tok := range []*EnrollmentToken{
			{ID: NewID(), Hash: "good", Name: "win-01", Labels: `{"site":"hq"}`, ExpiresAt: now.Add(time.Hour)},
			{ID: NewID(), Hash: "late", Name: "win-02", Labels: "{}", ExpiresAt: now.Add(-time.Second)},
			{ID: NewID(), Hash: "dup", Name: "win-01", Labels: "{}", ExpiresAt: now.Add(time.Hour)},
		} {
			if err := r.CreateEnrollmentToken(ctx, tok, nil); err != nil {
				t.Fatal(err)
			}
		}
		robot := func() *Robot { return &Robot{ID: NewID(), Capabilities: "[]", Status: "offline", CertSerial: "s"} }

		first := robot()
		if err := r.EnrollRobot(ctx, "good", first, now); err != nil {
			t.Fatal(err)
		}
		got, err := r.GetRobot(ctx, "win-01")
		if err != nil || got.ID != first.ID || got.Labels != `{"site":"hq"}` {
			t.Fatalf("the enrolled robot = %+v, %v; want the token's name and labels", got, err)
		}
		tests := []struct {
			name, hash string
			want       error
		}{
			{"Used", "good", ErrTokenUsed},
			{"Expired", "late", ErrTokenExpired},
			{"Unknown", "nope", ErrNotFound},
			{"NameTaken", "dup", ErrAlreadyExists},
		}
		for _, tt := range tests {
			if err := r.EnrollRobot(ctx, tt.hash, robot(), now); !errors.Is(err, tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
		}
		if list, _, _ := r.ListRobots(ctx, nil, Page{}); len(list) != 1 {
			t.Fatalf("%d robots after one good enrolment, want 1", len(list))
		}

		seen := now.Add(time.Minute).UTC().Truncate(time.Microsecond)
		if err := r.TouchRobots(ctx, map[string]time.Time{first.ID: seen}); err != nil {
			t.Fatal(err)
		}
		if err := r.RobotsOffline(ctx, map[string]time.Time{first.ID: seen}); err != nil {
			t.Fatal(err)
		}
		got, _ = r.GetRobot(ctx, first.ID)
		if got.Status != "offline" || got.LastSeen == nil || !got.LastSeen.Equal(seen) {
			t.Fatalf("after going offline: %+v", got)
		}
	})
}
