# --- labd Multi-Node helper functions (POSIX sh; busybox, dash and bash all run them) ---
# The dispatcher watches the console for "<LAVA_MULTI_NODE> <LAVA_NAME args>" and answers
# with "<LAVA_NAME_COMPLETE ...>" on this shell's stdin.

_mn_debug() {
	if [ -n "$LAVA_MULTI_NODE_DEBUG" ]; then
		echo "<${MN_API}_DEBUG $* $(date)>"
	fi
}

# True when $1 looks like key=value (something, '=', something), as LAVA's grep "..*=..*".
_mn_is_kv() {
	case "$1" in
	?*=?*) return 0 ;;
	esac
	return 1
}

# Prints the request. Arguments are re-split on whitespace, as LAVA's unquoted
# `echo $MESSAGE_HEAD $@">"` does (runs of blanks become one space; empty words vanish).
# The messageID must be present and must not look like key=value.
_mn_request() {
	_mn_debug "_lava_multi_node_send started"
	if [ -z "$1" ] || _mn_is_kv "$1"; then
		_mn_debug "_lava_multi_node_send error messageID : " "$1"
		exit 1
	fi
	set -f
	# shellcheck disable=SC2048,SC2086
	set -- $*
	set +f
	printf '%s\n' "<LAVA_MULTI_NODE> <${MN_API} $*>"
	_mn_debug "_lava_multi_node_send finished"
}

# Stores one reply ("<NAME_COMPLETE" and ">" already removed) in $LAVA_MULTI_NODE_CACHE as
# "<sender>:<key>=<value>" lines; a new entry starts at every word "<digits>:...".
_mn_store_reply() {
	_mn_debug "_lava_multi_node_process_message save message to $LAVA_MULTI_NODE_CACHE"
	_mn_dir=$(dirname "$LAVA_MULTI_NODE_CACHE")
	[ -d "$_mn_dir" ] || mkdir -p "$_mn_dir"
	rm -f "$LAVA_MULTI_NODE_CACHE"
	_mn_entry=
	set -f
	# shellcheck disable=SC2086
	for _mn_word in $1 ''; do
		_mn_new=
		if [ -z "$_mn_word" ]; then
			_mn_new=end
		else
			_mn_digits=${_mn_word%%[!0-9]*}
			if [ -n "$_mn_digits" ]; then
				case "${_mn_word#"$_mn_digits"}" in
				:*) _mn_new=yes ;;
				esac
			fi
		fi
		if [ -n "$_mn_new" ]; then
			if [ -n "$_mn_entry" ]; then
				if _mn_is_kv "$_mn_entry"; then
					printf '%s\n' "$_mn_entry" >>"$LAVA_MULTI_NODE_CACHE"
				elif [ "$_mn_entry" = nack ]; then
					echo "Error:no-response $1, Exit from $MN_API!"
					break
				else
					echo "Warning:unrecognized message $_mn_entry"
				fi
			fi
			_mn_entry=$_mn_word
		elif [ -n "$_mn_entry" ]; then
			_mn_entry="$_mn_entry $_mn_word"
		else
			_mn_entry=$_mn_word
		fi
	done
	set +f
}

# Reads console lines until this API's reply, then stores it. Like LAVA's helpers, the exit
# status is 0 even for a nack (LAVA's `exit 1` runs in a pipeline subshell).
_mn_wait_reply() {
	_mn_debug "lava_multi_node_wait_for_message starting to wait"
	# Plain `read` (backslashes are escapes), as LAVA's helpers read the console.
	# shellcheck disable=SC2162
	while read _mn_line; do
		case "$_mn_line" in
		*"<${MN_API}_COMPLETE"*)
			set -f
			# shellcheck disable=SC2086
			set -- $_mn_line
			set +f
			_mn_line="$*"
			_mn_line=${_mn_line#"<${MN_API}_COMPLETE"}
			_mn_line=${_mn_line%">"}
			_mn_store_reply "$_mn_line"
			break
			;;
		esac
	done
	_mn_debug "lava_multi_node_wait_for_message waiting over"
}
# --- end of helper functions ---
