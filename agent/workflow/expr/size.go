package expr

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
)

// Limits on the values an expression makes. The cost limit counts work,
// not memory: 'a'.replace('a', 'aaaaaaaaaa') repeated eight times costs
// little and makes a string of 100,000,000 characters. Every value a
// function or operator returns is held to these, and the functions that
// multiply their input (replace, join, format, lists.range) are checked
// before they run, so no evaluation allocates far past them. Values that
// only pass through (a step's large output read as it is) are not made by
// the expression and are not counted.
const (
	// MaxValueBytes bounds a string or bytes value an expression makes.
	MaxValueBytes = 4 << 20
	// MaxValueItems bounds the elements of a list or map an expression
	// makes.
	MaxValueItems = 100_000
)

// TooLargeError says that a value went past a size limit.
type TooLargeError struct {
	// What names the value: "output big", "the value of replace".
	What  string
	Size  int
	Limit int
	// Items is true when Size and Limit count elements, not bytes.
	Items bool
}

func (e *TooLargeError) Error() string {
	if e.Items {
		return fmt.Sprintf("%s has %d items, the limit is %d", e.What, e.Size, e.Limit)
	}
	return fmt.Sprintf("%s is %s, the limit is %s", e.What, FormatSize(e.Size), FormatSize(e.Limit))
}

// FormatSize writes a number of bytes for people: 512 bytes, 64 KiB,
// 10.0 MiB. Exact powers keep no decimals, so limits read as they were set.
func FormatSize(n int) string {
	const kib, mib = 1 << 10, 1 << 20
	switch {
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	case n >= kib && n%kib == 0:
		return fmt.Sprintf("%d KiB", n/kib)
	case n >= kib:
		return fmt.Sprintf("%.1f KiB", float64(n)/kib)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Truncate cuts s to at most limit bytes, on a UTF-8 boundary, and says
// how much was cut, so that a cut value never passes for a whole one.
func Truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	marker := fmt.Sprintf("… [cut: %s of %s]", FormatSize(len(s)-limit), FormatSize(len(s)))
	keep := max(limit-len(marker), 0)
	for keep > 0 && keep < len(s) && !isRuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + marker
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// sizeDecorator wraps every function call of a program so that the values
// it makes are held to MaxValueBytes and MaxValueItems.
func sizeDecorator(i interpreter.InterpretableV2) (interpreter.InterpretableV2, error) {
	call, ok := i.(interpreter.InterpretableCall)
	if !ok {
		return i, nil
	}
	return &sizedCall{InterpretableCall: call, name: call.Function()}, nil
}

// sizedCall is a call whose result is checked, and for the functions that
// multiply their input, whose result is foreseen from its arguments first.
// Foreseeing evaluates the arguments once more; the cost limit counts that
// work too, so it stays bounded.
type sizedCall struct {
	interpreter.InterpretableCall
	name string
}

func (c *sizedCall) Eval(a interpreter.Activation) ref.Val {
	return interpreter.EvalActivation(a, c.Exec)
}

func (c *sizedCall) Exec(f *interpreter.ExecutionFrame) ref.Val {
	switch c.name {
	case "replace", "join", "format", "lists.range":
		args := c.Args()
		vals := make([]ref.Val, len(args))
		for i, a := range args {
			v := a.Exec(f)
			if types.IsUnknownOrError(v) {
				return v
			}
			vals[i] = v
		}
		if err := foresee(c.name, vals); err != nil {
			return types.WrapErr(err)
		}
	}
	out := c.InterpretableCall.Exec(f)
	if err := checkValue("the value of "+c.display(), out); err != nil {
		return types.WrapErr(err)
	}
	return out
}

// display names the call as a workflow writes it.
func (c *sizedCall) display() string {
	switch c.name {
	case "_+_":
		return "+"
	case "_*_":
		return "*"
	}
	return c.name
}

// foresee says whether a call of a multiplying function would make a value
// over the limits.
func foresee(name string, args []ref.Val) error {
	what := "the value of " + name
	switch name {
	case "replace":
		if len(args) < 3 {
			return nil
		}
		s, ok1 := args[0].(types.String)
		old, ok2 := args[1].(types.String)
		repl, ok3 := args[2].(types.String)
		if !ok1 || !ok2 || !ok3 {
			return nil
		}
		n := strings.Count(string(s), string(old))
		if len(args) == 4 {
			if limit, ok := args[3].(types.Int); ok && limit >= 0 && int(limit) < n {
				n = int(limit)
			}
		}
		if size := len(s) + n*(len(repl)-len(old)); size > MaxValueBytes {
			return &TooLargeError{What: what, Size: size, Limit: MaxValueBytes}
		}
	case "join":
		size := 0
		if len(args) == 2 {
			if sep, ok := args[1].(types.String); ok {
				if l, ok := args[0].(traits.Lister); ok {
					if n, ok := l.Size().(types.Int); ok && n > 1 {
						size = len(sep) * int(n-1)
					}
				}
			}
		}
		size += textSize(args[0])
		if size > MaxValueBytes {
			return &TooLargeError{What: what, Size: size, Limit: MaxValueBytes}
		}
	case "format":
		size := 0
		for _, a := range args {
			size += textSize(a)
		}
		if size > MaxValueBytes {
			return &TooLargeError{What: what, Size: size, Limit: MaxValueBytes}
		}
	case "lists.range":
		if n, ok := args[len(args)-1].(types.Int); ok && n > MaxValueItems {
			return &TooLargeError{What: what, Size: int(n), Limit: MaxValueItems, Items: true}
		}
	}
	return nil
}

// textSize adds up the text in v, strings within lists and maps included.
func textSize(v ref.Val) int {
	switch v := v.(type) {
	case types.String:
		return len(v)
	case types.Bytes:
		return len(v)
	case traits.Lister:
		n := 0
		for it := v.Iterator(); it.HasNext() == types.True; {
			n += textSize(it.Next()) + 2
		}
		return n
	case traits.Mapper:
		n := 0
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			n += textSize(k) + textSize(v.Get(k)) + 4
		}
		return n
	}
	return 8
}

// checkValue holds a value just made to the limits.
func checkValue(what string, v ref.Val) error {
	switch v := v.(type) {
	case types.String:
		if len(v) > MaxValueBytes {
			return &TooLargeError{What: what, Size: len(v), Limit: MaxValueBytes}
		}
	case types.Bytes:
		if len(v) > MaxValueBytes {
			return &TooLargeError{What: what, Size: len(v), Limit: MaxValueBytes}
		}
	case traits.Sizer:
		if n, ok := v.Size().(types.Int); ok && n > MaxValueItems {
			return &TooLargeError{What: what, Size: int(n), Limit: MaxValueItems, Items: true}
		}
	}
	return nil
}

// sizeCost charges a call by the size of what it made, one unit per ten
// bytes or items as cel-go's own string functions do, so that the cost
// limit also bounds how much an evaluation may build in all.
type sizeCost struct{}

func (sizeCost) CallCost(_, _ string, _ []ref.Val, result ref.Val) *uint64 {
	var n int
	switch v := result.(type) {
	case types.String:
		n = len(v)
	case types.Bytes:
		n = len(v)
	case traits.Sizer:
		if s, ok := v.Size().(types.Int); ok {
			n = int(s)
		}
	}
	c := uint64(1 + n/10)
	return &c
}

// asTooLarge finds a TooLargeError in what an evaluation returned.
func asTooLarge(err error) (*TooLargeError, bool) {
	var tl *TooLargeError
	ok := errors.As(err, &tl)
	return tl, ok
}
