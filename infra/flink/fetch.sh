#!/bin/sh
# Fetch Apache Flink for the bulk job's Flink tests into .cache/flink (`make flink` runs this; see
# docs/flink.md). From Maven Central, through Maven (its own cache is ~/.m2):
#   job-server/   Beam's Flink runner and its dependencies (infra/flink/job-server/pom.xml)
#   cluster/      a standalone Flink 1.19 cluster's classpath (infra/flink/cluster/pom.xml)
# then checks every jar against infra/flink/jars.sha256 (no jar missing, none extra) and writes
#   beam-flink-job-server.jar   a launcher: no classes, a manifest with the job server's main
#                               class, its jars (Class-Path) and Flink's Java 17 module flags,
#                               for Beam's `--flink_job_server_jar`.
# `infra/flink/fetch.sh --record` writes jars.sha256 from what was fetched (after a version
# bump: review the diff).
set -eu

cd "$(dirname "$0")/../.."
INFRA=infra/flink
CACHE=.cache/flink
SUMS=$INFRA/jars.sha256
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:2.8

rm -rf "$CACHE/job-server" "$CACHE/cluster" "$CACHE/beam-flink-job-server.jar" "$CACHE/.fetched" \
	"$CACHE/jars.listed" "$CACHE/jars.diff"
mkdir -p "$CACHE"
for part in job-server cluster; do
	echo "fetching $INFRA/$part/pom.xml's jars (Maven, log in $CACHE/maven.log)"
	mvn --batch-mode -f "$INFRA/$part/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
		-DoutputDirectory="$PWD/$CACHE/$part" >"$CACHE/maven.log" 2>&1 || {
		tail -40 "$CACHE/maven.log" >&2
		exit 1
	}
done

cd "$CACHE"
if [ "${1:-}" = --record ]; then
	sha256sum job-server/*.jar cluster/*.jar >"../../$SUMS"
	echo "recorded $(wc -l <"../../$SUMS") jars in $SUMS"
fi
ls job-server/*.jar cluster/*.jar | sort >jars.listed
awk '{ print $2 }' "../../$SUMS" | sort | diff -u - jars.listed >jars.diff || {
	echo "error: the jars fetched are not those in $SUMS (- listed, + fetched):" >&2
	cat jars.diff >&2
	exit 1
}
sha256sum --check --quiet --strict "../../$SUMS" || {
	echo "error: checksum mismatch against $SUMS (a corrupt ~/.m2 copy? remove it, re-run)" >&2
	exit 1
}
rm jars.listed jars.diff

# The launcher's manifest: a jar per line (continuation lines start with one space, the second
# one separates), and the --add-opens / --add-exports of java17.args as manifest attributes.
attribute() { # NAME FLAG: FLAG's packages from java17.args as the manifest attribute NAME
	grep -e "^--$2=" "../../$INFRA/java17.args" | sed "s/^--$2=//; s/=ALL-UNNAMED\$//" |
		sed "1s/^/$1: /; 2,\$s/^/  /"
}
{
	echo "Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver"
	ls job-server/*.jar | sed '1s/^/Class-Path: /; 2,$s/^/  /'
	attribute Add-Opens add-opens
	attribute Add-Exports add-exports
} >launcher.mf
jar --create --file beam-flink-job-server.jar --manifest launcher.mf
rm launcher.mf
touch .fetched
echo "Flink fetched into $CACHE: $(ls job-server | wc -l) job-server jars, $(ls cluster | wc -l) cluster jars"
