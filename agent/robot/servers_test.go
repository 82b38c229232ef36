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
	var got []target
	for range 6 {
		got = append(got, s.pick(context.Background()))
	}
	want := []target{
		{"10.0.0.1:8443", "10.0.0.1"},
		{"10.0.0.2:9000", "replicas.example"},
		{"10.0.0.3:9000", "replicas.example"},
		{"[::1]:7", "::1"},
		{"10.0.0.1:8443", "10.0.0.1"},
		{"10.0.0.2:9000", "replicas.example"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("picked %v, want %v", got, want)
	}
	if lookups != 2 {
		t.Errorf("%d lookups over two rounds, want one a round", lookups)
	}
}

func TestServersUnresolvedNameIsDialledAsGiven(t *testing.T) {
	s, err := parseServers("gone.example:1")
	if err != nil {
		t.Fatal(err)
	}
	s.lookup = func(context.Context, string) ([]string, error) { return nil, errors.New("no such host") }
	if got := s.pick(context.Background()); got != (target{"gone.example:1", "gone.example"}) {
		t.Fatalf("picked %v", got)
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
