package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/casarerpa/casare/server/registry"
)

func TestParseRobotPool(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     RobotPool
		err      string
	}{
		{name: "CapabilitiesAndLabels", in: "cloud=capabilities=browser+shell;labels=site=cloud+tier=spot",
			want: RobotPool{Name: "cloud", Capabilities: map[string]bool{"browser": true, "shell": true}, Labels: map[string]string{"site": "cloud", "tier": "spot"}}},
		{name: "LabelsOnly", in: "eu=labels=region=eu-west-1",
			want: RobotPool{Name: "eu", Capabilities: map[string]bool{}, Labels: map[string]string{"region": "eu-west-1"}}},
		{name: "NothingInParticular", in: "plain=",
			want: RobotPool{Name: "plain", Capabilities: map[string]bool{}, Labels: map[string]string{}}},
		{name: "LabelValueWithEquals", in: "p=labels=k=a=b",
			want: RobotPool{Name: "p", Capabilities: map[string]bool{}, Labels: map[string]string{"k": "a=b"}}},
		{name: "ErrNoSelector", in: "cloud", err: "want NAME="},
		{name: "ErrEmptyName", in: "=capabilities=browser", err: "name is empty"},
		{name: "ErrNameTooLong", in: strings.Repeat("n", 64) + "=", err: "longer than 63 bytes"},
		{name: "ErrNameWithSpace", in: "my pool=", err: "holds one of"},
		{name: "ErrUnknownKey", in: "cloud=caps=browser", err: `"caps=browser": want capabilities=`},
		{name: "ErrKeyTwice", in: "cloud=labels=a=1;labels=b=2", err: "labels given twice"},
		{name: "ErrLabelTwice", in: "cloud=labels=a=1+a=2", err: "label a given twice"},
		{name: "ErrLabelWithoutValue", in: "cloud=labels=site", err: `want KEY=VALUE, got "site"`},
		{name: "ErrEmptyItem", in: "cloud=capabilities=browser++shell", err: "an empty item"},
		{name: "ErrNUL", in: "cloud=capabilities=a\x00b", err: "NUL"},
		{name: "ErrControlCharacter", in: "cl\x01oud=labels=k=v", err: "a control character at byte 2"},
		{name: "ErrBrokenUTF8", in: "cloud=labels=k=\xff", err: "not valid UTF-8"},
		{name: "ErrTooLong", in: "cloud=labels=k=" + strings.Repeat("v", 5000), err: "at most 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRobotPool(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseRobotPool(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseRobotPool(%q) (-want +got):\n%s", tc.in, diff)
			}
			again, err := ParseRobotPool(got.String())
			if err != nil || !cmp.Equal(got, again) {
				t.Errorf("ParseRobotPool(%q) = %v, %v; want %v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseRobotPools(t *testing.T) {
	t.Parallel()
	if _, err := ParseRobotPools([]string{"a=", "b=", "a=labels=x=1"}); err == nil || !strings.Contains(err.Error(), "pool a is given twice") {
		t.Errorf("a pool named twice: %v, want an error naming it", err)
	}
	many := make([]string, maxRobotPools+1)
	for i := range many {
		many[i] = fmt.Sprintf("p%d=", i)
	}
	if _, err := ParseRobotPools(many); err == nil || !strings.Contains(err.Error(), "at most 64 pools") {
		t.Errorf("%d pools: %v, want an error", len(many), err)
	}
	pools, err := ParseRobotPools([]string{"a=", "b=capabilities=x"})
	if err != nil || len(pools) != 2 || pools[1].Name != "b" {
		t.Errorf("ParseRobotPools = %v, %v", pools, err)
	}
}

func TestCountPoolJobs(t *testing.T) {
	t.Parallel()
	pools := []RobotPool{
		mustPool(t, "cloud=capabilities=browser;labels=site=cloud"),
		mustPool(t, "desk=capabilities=browser+desktop"),
	}
	shapes := []registry.PendingShape{
		{Requires: "{}", N: 5},
		{Requires: `{"capabilities":["browser"]}`, N: 7},
		{Requires: `{"capabilities":["desktop"]}`, N: 11},
		{Requires: `{"labels":{"site":"cloud"}}`, N: 13},
		{Requires: `{"labels":{"site":"office"}}`, N: 17},
		// Unreadable requirements fit no robot, as in the dispatcher.
		{Requires: `{"capabilities":`, N: 19},
	}
	fleet := []registry.FleetRobot{
		{ID: "r1", Running: 2, Capabilities: `["browser","shell"]`, Labels: `{"site":"cloud","pool":"cloud"}`},
		{ID: "r2", Running: 1, Capabilities: `["browser"]`, Labels: `{"site":"office"}`},
		{ID: "r3", Running: 3, Capabilities: `["browser","desktop"]`, Labels: `{}`},
		{ID: "r4", Running: 0, Capabilities: `["browser"]`, Labels: `{"site":"cloud"}`},
	}
	got := countPoolJobs(pools, shapes, fleet)
	want := []poolJobs{
		{name: "cloud", pending: 5 + 7 + 13, running: 2},
		{name: "desk", pending: 5 + 7 + 11, running: 3},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(poolJobs{})); diff != "" {
		t.Errorf("countPoolJobs (-want +got):\n%s", diff)
	}
}

func mustPool(t *testing.T, s string) RobotPool {
	t.Helper()
	p, err := ParseRobotPool(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// CASARE_ROBOT_POOLS holds several pools, comma separated as the other
// lists of the environment are, and Check names what is wrong in one.
func TestRobotPoolsFromEnv(t *testing.T) {
	t.Setenv("CASARE_ROBOT_POOLS", "cloud=capabilities=browser;labels=pool=cloud+site=eu,desk=capabilities=desktop")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	pools, err := ParseRobotPools(cfg.RobotPools)
	if err != nil || len(pools) != 2 || pools[0].String() != "cloud=capabilities=browser;labels=pool=cloud+site=eu" || pools[1].String() != "desk=capabilities=desktop" {
		t.Fatalf("pools %v, %v", pools, err)
	}
	cfg.RobotPools = append(cfg.RobotPools, "desk=")
	if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), "--robot-pool: pool desk is given twice") {
		t.Errorf("Check = %v, want the pool named twice", err)
	}
}
