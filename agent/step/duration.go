package step

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a parameter written as "1.5s", "2m" or a number of seconds.
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case string:
		parsed, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 1.5s", v)
		}
		if parsed < 0 {
			return fmt.Errorf("%q is negative", v)
		}
		*d = Duration(parsed)
	case float64:
		if v < 0 {
			return fmt.Errorf("%v is negative", v)
		}
		*d = Duration(v * float64(time.Second))
	default:
		return fmt.Errorf("want a duration like 1.5s or a number of seconds, got %s", b)
	}
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}
