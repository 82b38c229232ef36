package server

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// RobotPool is a group of robots alike, such as the Deployment of agents a
// Helm chart scales: what its robots have decides which pending jobs it
// could run, which the pool metrics count for its autoscaler.
type RobotPool struct {
	Name         string
	Capabilities map[string]bool
	Labels       map[string]string
}

// The limits of --robot-pool keep a label value of the metrics short and
// the work of a scrape small.
const (
	maxRobotPools      = 64
	maxRobotPoolName   = 63
	maxRobotPoolLength = 4096
)

// RobotPoolSyntax is how --robot-pool reads, for its help and its errors.
const RobotPoolSyntax = "NAME=capabilities=CAP+CAP;labels=KEY=VALUE+KEY=VALUE"

// ParseRobotPool reads one --robot-pool value, NAME=SELECTOR. SELECTOR is
// what every robot of the pool has, in parts separated by ';':
// capabilities=browser+shell and labels=site=cloud+tier=spot, the lists of
// the agent's --capabilities and --labels joined by '+' instead of ',', so
// that several pools fit one comma-separated CASARE_ROBOT_POOLS. Either
// part may be left out; NAME= alone is a pool of robots with nothing in
// particular. It returns an error naming what is wrong.
func ParseRobotPool(s string) (RobotPool, error) {
	if len(s) > maxRobotPoolLength {
		return RobotPool{}, fmt.Errorf("at most %d bytes, got %d", maxRobotPoolLength, len(s))
	}
	if strings.IndexByte(s, 0) >= 0 {
		return RobotPool{}, fmt.Errorf("%q: holds a NUL byte", s)
	}
	// Names, capabilities and labels end up in metric labels and job
	// status messages: a control character or broken UTF-8 there would
	// garble both.
	if !utf8.ValidString(s) {
		return RobotPool{}, fmt.Errorf("%q: is not valid UTF-8", s)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return RobotPool{}, fmt.Errorf("%q: holds a control character at byte %d", s, i)
	}
	name, selector, ok := strings.Cut(s, "=")
	if !ok {
		return RobotPool{}, fmt.Errorf("%q: want %s", s, RobotPoolSyntax)
	}
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return RobotPool{}, fmt.Errorf("%q: the pool's name is empty", s)
	case len(name) > maxRobotPoolName:
		return RobotPool{}, fmt.Errorf("%q: the pool's name is longer than %d bytes", s, maxRobotPoolName)
	case strings.ContainsAny(name, "=;+,\"\\ \t\n"):
		return RobotPool{}, fmt.Errorf("%q: the pool's name holds one of = ; + , \" \\ or a space", s)
	}
	pool := RobotPool{Name: name, Capabilities: map[string]bool{}, Labels: map[string]string{}}
	seen := map[string]bool{}
	for part := range strings.SplitSeq(selector, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		key, list, ok := strings.Cut(part, "=")
		if !ok || (key != "capabilities" && key != "labels") {
			return RobotPool{}, fmt.Errorf("pool %s: %q: want capabilities=CAP+CAP or labels=KEY=VALUE+KEY=VALUE", name, part)
		}
		if seen[key] {
			return RobotPool{}, fmt.Errorf("pool %s: %s given twice", name, key)
		}
		seen[key] = true
		for item := range strings.SplitSeq(list, "+") {
			item = strings.TrimSpace(item)
			if item == "" {
				return RobotPool{}, fmt.Errorf("pool %s: %s: an empty item in %q", name, key, list)
			}
			if key == "capabilities" {
				pool.Capabilities[item] = true
				continue
			}
			k, v, ok := strings.Cut(item, "=")
			if !ok || k == "" {
				return RobotPool{}, fmt.Errorf("pool %s: labels: want KEY=VALUE, got %q", name, item)
			}
			if _, dup := pool.Labels[k]; dup {
				return RobotPool{}, fmt.Errorf("pool %s: label %s given twice", name, k)
			}
			pool.Labels[k] = v
		}
	}
	return pool, nil
}

// String is the pool in the syntax ParseRobotPool reads.
func (p RobotPool) String() string {
	var parts []string
	if len(p.Capabilities) > 0 {
		parts = append(parts, "capabilities="+strings.Join(slices.Sorted(maps.Keys(p.Capabilities)), "+"))
	}
	if len(p.Labels) > 0 {
		var labels []string
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			labels = append(labels, k+"="+p.Labels[k])
		}
		parts = append(parts, "labels="+strings.Join(labels, "+"))
	}
	return p.Name + "=" + strings.Join(parts, ";")
}

// ParseRobotPools reads every --robot-pool value; a name given twice is an
// error, as two selectors would report under one label.
func ParseRobotPools(values []string) ([]RobotPool, error) {
	if len(values) > maxRobotPools {
		return nil, fmt.Errorf("--robot-pool: at most %d pools, got %d", maxRobotPools, len(values))
	}
	var pools []RobotPool
	names := map[string]bool{}
	for _, v := range values {
		p, err := ParseRobotPool(v)
		if err != nil {
			return nil, fmt.Errorf("--robot-pool: %w", err)
		}
		if names[p.Name] {
			return nil, fmt.Errorf("--robot-pool: pool %s is given twice", p.Name)
		}
		names[p.Name] = true
		pools = append(pools, p)
	}
	return pools, nil
}
