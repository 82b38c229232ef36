package workflow

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// nested returns depth levels of groups with a log step at the bottom.
func nested(depth int) *casarev1.Workflow {
	s := &casarev1.Step{Id: "leaf", Uses: "log", With: message("x")}
	for i := depth - 1; i > 0; i-- {
		s = &casarev1.Step{Id: fmt.Sprintf("g%d", i), Steps: []*casarev1.Step{s}}
	}
	return &casarev1.Workflow{Steps: []*casarev1.Step{s}}
}

func message(m string) *structpb.Struct {
	w, _ := structpb.NewStruct(map[string]any{"message": m})
	return w
}

// groups returns n groups of size log steps that all have one id.
func groups(n, size int) *casarev1.Workflow {
	wf := &casarev1.Workflow{}
	for g := range n {
		group := &casarev1.Step{Id: fmt.Sprintf("g%d", g)}
		for range size {
			group.Steps = append(group.Steps, &casarev1.Step{Id: "dup", Uses: "log", With: message("x")})
		}
		wf.Steps = append(wf.Steps, group)
	}
	return wf
}

func count(steps []*casarev1.Step) int {
	n := 0
	for _, s := range steps {
		n += 1 + count(s.GetSteps()) + count(s.GetOnError())
	}
	return n
}

func TestLimits(t *testing.T) {
	flat := func(n int) *casarev1.Workflow {
		wf := &casarev1.Workflow{}
		for g := 0; n > 0; g++ {
			grp := &casarev1.Step{Id: fmt.Sprintf("g%d", g)}
			n--
			for i := 0; i < 1000 && n > 0; i++ {
				grp.Steps = append(grp.Steps, &casarev1.Step{Id: fmt.Sprintf("s%d", i), Uses: "log", With: message("x")})
				n--
			}
			wf.Steps = append(wf.Steps, grp)
		}
		return wf
	}
	deepValue := func(depth int) *casarev1.Workflow {
		v := any("x")
		for range depth {
			v = map[string]any{"k": v}
		}
		w, err := structpb.NewStruct(map[string]any{"message": v})
		if err != nil {
			t.Fatal(err)
		}
		return &casarev1.Workflow{Steps: []*casarev1.Step{{Id: "a", Uses: "set", With: w}}}
	}
	for _, tc := range []struct {
		name string
		wf   *casarev1.Workflow
		err  string // in the error; empty: no limit is exceeded
	}{
		{name: "DepthAtLimit", wf: nested(MaxDepth)},
		{name: "DepthOverLimit", wf: nested(MaxDepth + 1), err: ".steps: steps nested 33 deep, the limit is 32"},
		{name: "NineThousandLevels", wf: nested(9000), err: "steps nested 33 deep, the limit is 32"},
		{name: "StepsAtLimit", wf: flat(MaxSteps)},
		{name: "StepsOverLimit", wf: flat(MaxSteps + 1), err: fmt.Sprintf("more than %d steps in the workflow, the limit is %d", MaxSteps, MaxSteps)},
		{name: "ValueDepthAtLimit", wf: deepValue(MaxValueDepth)},
		{name: "ValueDepthOverLimit", wf: deepValue(MaxValueDepth + 1), err: "steps[0].with.message: nested more than 32 deep, the limit is 32"},
		{name: "ValuesAtLimit", wf: manyValues(MaxValues - 7)},
		{name: "ValuesOverLimit", wf: manyValues(MaxValues - 6), err: fmt.Sprintf("steps[0].with.v: more than %d values in the workflow, the limit is %d", MaxValues, MaxValues)},
		{name: "InputValuesOverLimit", wf: manyDefault(MaxValues), err: fmt.Sprintf("inputs.x.default: more than %d values in the workflow, the limit is %d", MaxValues, MaxValues)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := Validate(tc.wf, testCatalogue)
			took := time.Since(start)
			if tc.err == "" {
				if err := CheckLimits(tc.wf); err != nil {
					t.Fatalf("CheckLimits: %v", err)
				}
				return
			}
			var verr *ValidationError
			if !errors.As(err, &verr) || len(verr.Problems) != 1 || !strings.Contains(verr.Problems[0], tc.err) {
				t.Fatalf("Validate = %v, want one problem with %q", err, tc.err)
			}
			t.Logf("refused in %s", took)
		})
	}
	if d := nested(MaxDepth + 1); !strings.HasPrefix(CheckLimits(d).(*ValidationError).Problems[0], "steps[0].steps[0].steps") {
		t.Errorf("the path does not lead to the step: %v", CheckLimits(d))
	}
}

// manyValues returns a set step of 7 values with n empty maps in its with.
func manyValues(n int) *casarev1.Workflow {
	l := &structpb.ListValue{Values: make([]*structpb.Value, n)}
	for i := range l.Values {
		l.Values[i] = structpb.NewStructValue(&structpb.Struct{})
	}
	with := &structpb.Struct{Fields: map[string]*structpb.Value{"v": structpb.NewListValue(l)}}
	return &casarev1.Workflow{Steps: []*casarev1.Step{{Id: "a", Uses: "set", With: with}}}
}

// manyDefault returns a workflow whose one input defaults to a list of n
// numbers.
func manyDefault(n int) *casarev1.Workflow {
	l := &structpb.ListValue{Values: make([]*structpb.Value, n)}
	for i := range l.Values {
		l.Values[i] = structpb.NewNumberValue(1)
	}
	return &casarev1.Workflow{Inputs: map[string]*casarev1.InputSpec{"x": {Type: "list", Default: structpb.NewListValue(l)}}}
}

func TestParseLimits(t *testing.T) {
	deepJSON := strings.Repeat(`{"steps": [{"id": "g", "steps": [`, 9000) + `{"id": "a", "uses": "log"}` + strings.Repeat(`]}]}`, 9000)
	// Flow style, as an attacker would write it (past 5,000 levels the YAML
	// decoder refuses it itself).
	deepYAML := "steps:\n  - " + strings.Repeat("{id: g, steps: [", 4000) + "{id: a, uses: log}" + strings.Repeat("]}", 4000) + "\n"
	withinJSON, err := protojson.Marshal(nested(MaxDepth))
	if err != nil {
		t.Fatal(err)
	}
	// A set step of 7 values with n empty maps in its with.
	manyJSON := func(n int) string {
		return `{"steps": [{"id": "a", "uses": "set", "with": {"v": [` + strings.Repeat("{}, ", n-1) + "{}]}}]}"
	}
	manyYAML := func(n int) string {
		return "steps:\n  - id: a\n    uses: set\n    with:\n      v: [" + strings.Repeat("{}, ", n-1) + "{}]\n"
	}
	tooMany := fmt.Sprintf("parse workflow: more than %d values in the workflow, the limit is %d", MaxValues, MaxValues)
	for _, tc := range []struct {
		name string
		data string
		err  string
	}{
		{"JSONNineThousandLevels", deepJSON, "parse workflow: nested more than 104 deep, the limit is 104"},
		{"YAMLFourThousandLevels", deepYAML, "parse workflow: nested more than 104 deep, the limit is 104"},
		{"TooLarge", "steps: []\n#" + strings.Repeat("x", MaxDefinitionBytes), "parse workflow: the file is 4.0 MiB, the limit is 4 MiB"},
		{"DepthLimitParses", string(withinJSON), ""},
		{"JSONValuesAtLimit", manyJSON(MaxValues - 7), ""},
		{"JSONValuesOverLimit", manyJSON(MaxValues - 6), tooMany},
		{"YAMLValuesAtLimit", manyYAML(MaxValues - 7), ""},
		{"YAMLValuesOverLimit", manyYAML(MaxValues - 6), tooMany},
		// What the YAML becomes is counted too: 2,000 aliases of a list
		// of 100 values.
		{"YAMLAliasesOverLimit", "x: &a [" + strings.Repeat("1, ", 99) + "1]\nsteps: [" + strings.Repeat("*a, ", 1999) + "*a]\n", tooMany},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse([]byte(tc.data))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tc.err {
				t.Fatalf("Parse = %v, want %q", err, tc.err)
			}
			t.Logf("refused in %s", time.Since(start))
		})
	}
}

func TestDuplicateIDsLinear(t *testing.T) {
	// The 20 groups of 1,000 steps that share an id: a CEL rule
	// quadratic in each group's size took 1 min 44 s.
	wf := groups(20, 1000)
	if n := count(wf.Steps); n > MaxSteps {
		// Over the step limit: refused at once, whatever the ids.
		start := time.Now()
		err := Validate(wf, testCatalogue)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the limit is %d", MaxSteps)) {
			t.Fatalf("Validate = %v", err)
		}
		t.Logf("%d steps refused in %s", n, time.Since(start))
	}
	wf = groups(2, 999)
	start := time.Now()
	err := Validate(wf, testCatalogue)
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Validate = %v", err)
	}
	t.Logf("2 groups of 999 duplicates checked in %s", time.Since(start))
	for g := range 2 {
		want := fmt.Sprintf(`steps[%d].steps: step id "dup" is used more than once`, g)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in %v", want, err)
		}
	}
}

func TestProblemsCapped(t *testing.T) {
	wf := &casarev1.Workflow{}
	huge := strings.Repeat("x", 3<<20)
	for i := range 500 {
		wf.Steps = append(wf.Steps, &casarev1.Step{Id: fmt.Sprintf("s%d", i), Uses: "log", With: message("${{ nope." + huge[:10_000] + " }}")})
	}
	wf.Steps = append(wf.Steps, &casarev1.Step{Id: "big", Uses: "log", With: message("${{ " + huge + " + }}")})
	err := Validate(wf, testCatalogue)
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Validate = %v", err)
	}
	if len(verr.Problems) != MaxProblems || verr.More != 501-MaxProblems {
		t.Errorf("%d problems and %d more, want %d and %d", len(verr.Problems), verr.More, MaxProblems, 501-MaxProblems)
	}
	if !strings.HasSuffix(err.Error(), fmt.Sprintf("and %d more", 501-MaxProblems)) {
		t.Errorf("the error does not say how many more: ...%s", err.Error()[len(err.Error())-50:])
	}
	if n := len(err.Error()); n > MaxProblems*(maxProblem+4)+100 {
		t.Errorf("error of %d bytes", n)
	}
	if !strings.Contains(verr.Problems[0], "… [cut: ") {
		t.Errorf("a quoted expression is not cut: %.300s", verr.Problems[0])
	}
}

func TestExpressionBudget(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		pad   int
		err   string
		valid bool
	}{
		{name: "CountAtLimit", n: MaxExpressions, valid: true},
		{name: "CountOverLimit", n: MaxExpressions + 1, err: fmt.Sprintf("more than %d different expressions in the workflow, the limit is %d", MaxExpressions, MaxExpressions)},
		{name: "BytesOverLimit", n: 20, pad: 4000, err: "more than 64 KiB of different expressions in the workflow, the limit is 64 KiB"},
		{name: "RepeatedCountOnce", n: 1, valid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wf := &casarev1.Workflow{}
			for g := range 2 {
				grp := &casarev1.Step{Id: fmt.Sprintf("g%d", g)}
				for i := range 900 {
					src := fmt.Sprintf("'%s' + '%d'", strings.Repeat("p", tc.pad), (g*900+i)%tc.n)
					grp.Steps = append(grp.Steps, &casarev1.Step{Id: fmt.Sprintf("s%d", i), Uses: "log", With: message("${{ " + src + " }}")})
				}
				wf.Steps = append(wf.Steps, grp)
			}
			want := tc.err
			if tc.valid {
				want = ""
			}
			validOrOneProblem(t, Validate(wf, testCatalogue), want)
		})
	}
}

func TestExpressionNodeBudget(t *testing.T) {
	// A thousand steps that each compute something of their own, with an
	// expression of 7 nodes, fit; with one of 9 they go past the budget
	// of nodes, though not past the count or the bytes.
	for _, tc := range []struct {
		name string
		src  string
		err  string
	}{
		{name: "Typical", src: "steps.fetch.outputs.rows.size() > %d"},
		{name: "OverLimit", src: "1+1+1+1+%d", err: fmt.Sprintf("more than %d syntax-tree nodes in the different expressions of the workflow, the limit is %d", MaxExpressionNodes, MaxExpressionNodes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wf := &casarev1.Workflow{Inputs: map[string]*casarev1.InputSpec{"region": {Type: "string"}}}
			wf.Steps = append(wf.Steps, &casarev1.Step{Id: "fetch", Uses: "log", With: message("x")})
			// A workflow lists at most a thousand steps in one place.
			grp := &casarev1.Step{Id: "grp"}
			for i := range MaxExpressions {
				grp.Steps = append(grp.Steps, &casarev1.Step{Id: fmt.Sprintf("s%d", i), Uses: "log", With: message("${{ " + fmt.Sprintf(tc.src, i) + " }}")})
			}
			wf.Steps = append(wf.Steps, grp)
			validOrOneProblem(t, Validate(wf, testCatalogue), tc.err)
		})
	}
}

// validOrOneProblem checks Validate's answer: no error when want is
// empty, else exactly one problem that contains want.
func validOrOneProblem(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("Validate: %.500v", err)
		}
		return
	}
	var verr *ValidationError
	if !errors.As(err, &verr) || len(verr.Problems) != 1 || !strings.Contains(verr.Problems[0], want) {
		t.Fatalf("Validate = %.500v, want one problem with %q", err, want)
	}
}

// TestRuleProblemsComeFirst checks that the rules, checked beside the
// walk, are listed before what the walk finds, as if found first, and
// that the two share MaxProblems.
func TestRuleProblemsComeFirst(t *testing.T) {
	wf := &casarev1.Workflow{}
	for i := range 15 {
		// A parallelism over 64 breaks a rule; without a foreach it is
		// also a problem the walk finds.
		wf.Steps = append(wf.Steps, &casarev1.Step{Id: fmt.Sprintf("s%d", i), Uses: "log", With: message("x"), Parallelism: 65})
	}
	var verr *ValidationError
	if err := Validate(wf, testCatalogue); !errors.As(err, &verr) {
		t.Fatalf("Validate = %v", err)
	}
	if len(verr.Problems) != MaxProblems || verr.More != 30-MaxProblems {
		t.Fatalf("%d problems and %d more, want %d and %d", len(verr.Problems), verr.More, MaxProblems, 30-MaxProblems)
	}
	for i, p := range verr.Problems {
		rule := strings.Contains(p, "less than or equal to 64")
		if rule != (i < 15) {
			t.Errorf("problem %d: %s", i, p)
		}
	}
}
