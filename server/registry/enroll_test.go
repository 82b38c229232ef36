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
		// Two sessions: the robot left the first replica's and registered
		// with another. Times with nanoseconds, as the gateway has them.
		older := now.Add(30*time.Second + 123)
		newer := now.Add(50*time.Second + 456)
		for _, since := range []time.Time{older, newer} {
			first.Status, first.ConnectedSince, first.LastSeen = "idle", &since, &since
			if err := r.RobotConnected(ctx, first); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.RobotsOffline(ctx, map[string]RobotSession{first.ID: {ConnectedSince: older, LastSeen: seen.Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		got, _ = r.GetRobot(ctx, first.ID)
		if got.Status != "idle" || got.ConnectedSince == nil || !got.ConnectedSince.Equal(newer.UTC().Truncate(time.Microsecond)) || !got.LastSeen.Equal(got.ConnectedSince.UTC()) {
			t.Fatalf("the end of an older session changed the robot's newer one: %+v", got)
		}
		if err := r.RobotsOffline(ctx, map[string]RobotSession{first.ID: {ConnectedSince: newer, LastSeen: seen}}); err != nil {
			t.Fatal(err)
		}
		got, _ = r.GetRobot(ctx, first.ID)
		if got.Status != "offline" || got.ConnectedSince != nil || got.LastSeen == nil || !got.LastSeen.Equal(seen) {
			t.Fatalf("after going offline: %+v", got)
		}
	})
}
