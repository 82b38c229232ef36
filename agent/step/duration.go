package step

import (
	"encoding/json"
	"time"

	"github.com/casarerpa/casare/agent/workflow/spec"
)

// Duration is a parameter written as "1.5s", "2m" or a number of seconds.
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	parsed, err := spec.DecodeDuration(b)
	if err != nil {
		return err
	}
	*d = Duration(parsed)
	return nil
}

// LiteralKind says a workflow writes a Duration as spec.DecodeDuration
// reads it.
func (Duration) LiteralKind() spec.Kind { return spec.Duration }

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}
