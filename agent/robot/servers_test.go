package robot

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestServersGoRoundAndExpandNames(t *testing.T) {
	s, err := parseServers("10.0.0.1:8443, replicas.example:9000,[::1]:7")
	if err != nil {
		t.Fatal(err)
	}
	lookups := 0
	s.lookup = func(_ context.Context, host string) ([]string, error) {
		lookups++
		if host != "replicas.example" {
			return nil, errors.New("no such host")
		}
		return []string{"10.0.0.2", "10.0.0.3"}, nil
	}
	var got [][]target
	for range 2 {
		got = append(got, s.round(context.Background()))
	}
	a, b, c, d := target{"10.0.0.1:8443", "10.0.0.1"}, target{"10.0.0.2:9000", "replicas.example"},
		target{"10.0.0.3:9000", "replicas.example"}, target{"[::1]:7", "::1"}
	// A round that won nothing moves the start on by one.
	want := [][]target{{a, b, c, d}, {b, c, d, a}}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("round %d is %v, want %v", i, got[i], want[i])
		}
	}
	if lookups != 2 {
		t.Errorf("%d lookups over two rounds, want one a round", lookups)
	}
}

func TestServersNextRoundStartsAfterTheReplicaThatWon(t *testing.T) {
	s, err := parseServers("a:1,b:1,c:1")
	if err != nil {
		t.Fatal(err)
	}
	s.lookup = func(_ context.Context, host string) ([]string, error) { return nil, errors.New("no such host") }
	first := func() string { return s.round(context.Background())[0].addr }
	if got := first(); got != "a:1" {
		t.Fatalf("first round starts at %s", got)
	}
	s.dialled(1) // b won
	if got := first(); got != "c:1" {
		t.Fatalf("after b won the round starts at %s, want c:1", got)
	}
	s.dialled(2) // the round was c, a, b: b won again
	if got := first(); got != "c:1" {
		t.Fatalf("after b won again the round starts at %s, want c:1", got)
	}
	s.dialled(0) // c won
	if got := first(); got != "a:1" {
		t.Fatalf("after c won the round starts at %s, want a:1", got)
	}
}

func TestServersUnresolvedNameIsDialledAsGiven(t *testing.T) {
	s, err := parseServers("gone.example:1")
	if err != nil {
		t.Fatal(err)
	}
	s.lookup = func(context.Context, string) ([]string, error) { return nil, errors.New("no such host") }
	if got := s.round(context.Background()); !slices.Equal(got, []target{{"gone.example:1", "gone.example"}}) {
		t.Fatalf("round is %v", got)
	}
}

func TestServersRefuseBadAddresses(t *testing.T) {
	for _, list := range []string{"", " , ", "nohost", "a:1,b", ":8443"} {
		_, err := parseServers(list)
		if err == nil || !strings.Contains(err.Error(), "server address") {
			t.Errorf("parseServers(%q) = %v, want an error naming the server address", list, err)
		}
	}
}
