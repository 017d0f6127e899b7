# urun's `docker run` drop-in for bash and zsh. Source it system-wide (a file in
# /etc/profile.d) or from your ~/.bashrc / ~/.zshrc:
#
#     . /path/to/urun.sh
#
# It defines a shell function `docker`: `docker run ...` (and `docker container run
# ...`) go to `urun ...` when you cannot use the Docker daemon yourself (you are not
# in the `docker` group, i.e. cannot open its socket); every other docker command, and
# `docker run` for those who can use Docker directly, go to the real docker unchanged.
#
#   URUN_DOCKER=urun    always send `docker run` to urun
#   URUN_DOCKER=docker  never (the function then only passes through)
#
# Nothing here grants anything: urun and urund decide what runs, and a refused docker
# flag is refused by urun with exit status 125.

# True when `docker run` should go to the real docker.
__urun_docker_usable() {
    case "${URUN_DOCKER-}" in
        urun) return 1 ;;
        docker) return 0 ;;
    esac
    # A remote or non-default daemon is the user's own business.
    [ -n "${DOCKER_HOST-}" ] && return 0
    [ -r /var/run/docker.sock ] && [ -w /var/run/docker.sock ]
}

docker() {
    if ! __urun_docker_usable && command -v urun >/dev/null 2>&1; then
        if [ "${1-}" = run ]; then
            shift
            command urun "$@"
            return
        fi
        if [ "${1-}" = container ] && [ "${2-}" = run ]; then
            shift 2
            command urun "$@"
            return
        fi
    fi
    command docker "$@"
}
