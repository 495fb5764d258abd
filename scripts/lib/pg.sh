# pg.sh: shell helpers for the scripts that talk to PostgreSQL (tests/sql/run.sh,
# bench/sql/*.sh). Sourced, not run.

# The same server, another database: swap the database of a URL or of a
# key=value connection string.
with_db() {
	case $1 in
	postgres://* | postgresql://*)
		printf '%s\n' "$1" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\\1/$2#" ;;
	*) printf '%s dbname=%s\n' "$1" "$2" ;;
	esac
}
