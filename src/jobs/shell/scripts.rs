//! The DUT-side test-shell helpers. They emit exactly the lines lava-dispatcher 2023.01's
//! helpers emit (section 7.1 of the reference) and behave the same way on success and on misuse
//! (exit codes, files under `$LAVA_RESULT_DIR`), written for a plain POSIX shell: dash and
//! busybox ash run them. Values are baked in when the overlay is built, so a helper also works
//! when called outside `lava-test-runner` (it sources `lava-common-functions` by absolute path).

/// Names of the helpers installed in `<results_dir>/bin`, in LAVA's (sorted) order.
pub const HELPERS: [&str; 9] = [
    "lava-common-functions",
    "lava-test-case",
    "lava-test-event",
    "lava-test-feedback",
    "lava-test-raise",
    "lava-test-reference",
    "lava-test-runner",
    "lava-test-set",
    "lava-test-shell",
];

/// The text of helper `name` for a results directory (e.g. `/lava-12`) and shell (`/bin/sh`),
/// with LAVA's `#!<shell>` header and blank line.
pub fn helper(name: &str, results_dir: &str, sh: &str) -> Option<String> {
    let bin = format!("{results_dir}/bin");
    let body = match name {
        "lava-common-functions" => COMMON.to_string(),
        "lava-test-case" => TEST_CASE.replace("@BIN@", &bin),
        "lava-test-event" => TEST_EVENT.replace("@BIN@", &bin),
        "lava-test-feedback" => TEST_FEEDBACK.replace("@BIN@", &bin),
        "lava-test-raise" => TEST_RAISE.replace("@BIN@", &bin),
        "lava-test-reference" => TEST_REFERENCE.replace("@BIN@", &bin),
        "lava-test-runner" => TEST_RUNNER.replace("@BIN@", &bin),
        "lava-test-set" => TEST_SET.replace("@BIN@", &bin),
        "lava-test-shell" => TEST_SHELL.to_string(),
        _ => return None,
    };
    Some(format!("#!{sh}\n\n{body}"))
}

const COMMON: &str = r#"# Sourced by the helpers. A signal is one line on stdout, or a kernel log line (<0> priority)
# when the definition asked for lava-signal: kmsg (KMSG is then set).
signal ()
{
    if [ -n "${KMSG}" ]; then
        echo "<0>${1}" > /dev/kmsg
    else
        echo "${1}"
    fi
}
"#;

const TEST_CASE: &str = r#". @BIN@/lava-common-functions

lava_test_case_usage () {
    echo "Usage: lava-test-case TEST_CASE_ID --shell cmds ..."
    echo "   or: lava-test-case TEST_CASE_ID --result RESULT [--units UNITS] "
    echo "                                   [--measurement MEASUREMENT]"
    echo ""
    echo "Either run or record the results of a particular test case"
}

export TEST_CASE_ID="$1"
shift
if [ -z "$TEST_CASE_ID" ]; then
    lava_test_case_usage
    exit 1
fi

if [ "$1" = "--shell" ]; then
    shift
    signal "<LAVA_SIGNAL_STARTTC $TEST_CASE_ID>"
    eval "$*"
    status=$?
    signal "<LAVA_SIGNAL_ENDTC $TEST_CASE_ID>"
    if [ $status -eq 0 ]; then
        RESULT=pass
    else
        RESULT=fail
    fi
else
    while [ $# -gt 0 ]; do
        case "$1" in
            --result) shift; RESULT=$1; shift ;;
            --units) shift; UNITS=$1; shift ;;
            --measurement) shift; MEASUREMENT=$1; shift ;;
            *) lava_test_case_usage; exit 1 ;;
        esac
    done
fi

# LAVA_RESULT_DIR is exported by lava-test-shell.
case_dir="$LAVA_RESULT_DIR/results/$TEST_CASE_ID"
mkdir -p "$case_dir"

if [ -z "${RESULT+set}" ]; then
    echo "--result must be specified"
    exit 1
fi
fields=" RESULT=$RESULT"
echo $RESULT > "$case_dir/result"
if [ -n "${UNITS+set}" ]; then
    echo $UNITS > "$case_dir/units"
    fields="$fields UNITS=$UNITS"
fi
if [ -n "${MEASUREMENT+set}" ]; then
    echo $MEASUREMENT > "$case_dir/measurement"
    fields="$fields MEASUREMENT=$MEASUREMENT"
fi

signal "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=$TEST_CASE_ID$fields>"

# A failing --shell command is a failed test case, not a failed helper.
exit 0
"#;

const TEST_SET: &str = r#". @BIN@/lava-common-functions

lava_test_set_usage () {
    echo "Usage:"
    echo "       lava-test-set start NAME"
    echo "       lava-test-set stop"
    echo ""
    echo "Start a test set with the given NAME, or stop the test set section."
}

action="$1"
shift
case "$action" in
    start)
        if [ -z "$1" ]; then
            lava_test_set_usage
            exit 1
        fi
        signal "<LAVA_SIGNAL_TESTSET START $1>"
        ;;
    stop)
        signal "<LAVA_SIGNAL_TESTSET STOP>"
        ;;
    *)
        lava_test_set_usage
        exit 1
        ;;
esac
exit 0
"#;

const TEST_REFERENCE: &str = r#". @BIN@/lava-common-functions

lava_test_reference_usage () {
    echo "Usage:"
    echo "       lava-test-reference TEST_CASE_ID --result pass|fail|skip|unknown --reference URL"
    echo ""
    echo "Create a reference to a URL for a specified test case name."
}

TEST_CASE_ID="$1"
shift
if [ -z "$TEST_CASE_ID" ]; then
    # LAVA's helper calls an undefined function here: nothing on stdout, an error, status 1.
    echo "lava-test-reference: TEST_CASE_ID is missing" >&2
    exit 1
fi
while [ $# -gt 0 ]; do
    case "$1" in
        --result) shift; RESULT=$1; shift ;;
        --reference) shift; REFERENCE=$1; shift ;;
        *) lava_test_reference_usage; exit 1 ;;
    esac
done
if [ -z "${RESULT+set}" ]; then
    echo "--result must be specified"
    exit 1
fi
if [ -z "${REFERENCE+set}" ]; then
    echo "--reference must be specified"
    exit 1
fi
signal "<LAVA_SIGNAL_TESTREFERENCE $TEST_CASE_ID $RESULT $REFERENCE>"
exit 0
"#;

const TEST_RAISE: &str = r#". @BIN@/lava-common-functions

# Ends the test run with a TestError carrying MESSAGE.
if [ -z "$1" ]; then
    echo "Usage:"
    echo "       lava-test-raise MESSAGE"
    echo ""
    exit 1
fi
signal "<LAVA_SIGNAL_TESTRAISE $*>"
exit 1
"#;

const TEST_EVENT: &str = r#". @BIN@/lava-common-functions

# Logs MESSAGE as an event record (one argument only).
MESSAGE="$1"
shift
if [ -n "$1" ]; then
    echo "Usage:"
    echo "       lava-test-event MESSAGE"
    echo ""
    exit 1
fi
signal "<LAVA_SIGNAL_TESTEVENT $MESSAGE>"
exit 0
"#;

const TEST_FEEDBACK: &str = r#". @BIN@/lava-common-functions

while [ $# -gt 0 ]; do
    case "$1" in
        --namespace) shift; NAMESPACE=$1; shift ;;
        *)
            echo "Usage:"
            echo "       lava-test-feedback --namespace STRING"
            echo ""
            echo "Listen to feedback from the specified namespace."
            exit 1
            ;;
    esac
done
if [ -z "${NAMESPACE+set}" ]; then
    echo "--namespace must be specified"
    exit 1
fi
signal "<LAVA_SIGNAL_TESTFEEDBACK $NAMESPACE>"
exit 0
"#;

const TEST_SHELL: &str = r#"# lava-test-shell --output_dir DIR SHELL -e RUN_SH: runs one definition with its results dir.
shift
ODIR=$1
shift
export LAVA_RESULT_DIR=${ODIR}
$*
echo $? > ${ODIR}/return_code
"#;

const TEST_RUNNER: &str = r#"set +x

# Runs every definition listed in <stage>/lava-test-runner.conf, once: the list is renamed
# first so a reboot does not run it again.
STAGE_DIR=${1:-/lava}
WORKFILE="$STAGE_DIR/lava-test-runner.conf"
RESULTSDIR="$STAGE_DIR/results"
BINDIR="@BIN@"

. $BINDIR/lava-common-functions

lava_test_runner_exit ()
{
    signal "<LAVA_TEST_RUNNER EXIT>"
}
trap lava_test_runner_exit INT TERM EXIT

export PATH=${BINDIR}:${PATH}
mkdir -p ${RESULTSDIR}

NOW=`date +%s`
mv ${WORKFILE} ${WORKFILE}-${NOW}
WORKFILE=${WORKFILE}-${NOW}

if [ -z "${SHELL}" ]; then
    SHELL=/bin/sh
fi

for testdir in $(cat ${WORKFILE} | grep -v LAVA_SIGNAL); do
    odir=${RESULTSDIR}/`basename $testdir`-`date +%s`
    mkdir ${odir}
    if [ -f ${testdir}/install.sh ]; then
        /bin/sh ${testdir}/install.sh
        status=$?
        echo ${status} > ${odir}/install_return_code
        if [ ${status} -ne 0 ]; then
            signal "<LAVA_TEST_RUNNER INSTALL_FAIL>"
            continue
        fi
    fi
    lava-test-shell --output_dir ${odir} ${SHELL} -e "${testdir}/run.sh"
done
"#;
