# urun's `docker` drop-in for bash and zsh. Source it system-wide (a file in
# /etc/profile.d) or from your ~/.bashrc / ~/.zshrc:
#
#     . /path/to/urun.sh
#
# It defines a shell function `docker`: when you cannot use the Docker daemon yourself
# (you are not in the `docker` group, i.e. cannot open its socket), the docker commands
# urun offers go to urun:
#
#   docker run ...                        → urun run ...
#   docker container run ...              → urun run ...
#   docker build ...                      → urun build ...
#   docker image build / builder build    → urun build ...
#   docker images ...                     → urun images ...
#   docker image ls / image list          → urun images ...
#   docker rmi ...                        → urun rmi ...
#   docker image rm / image remove        → urun rmi ...
#   docker push / docker image push       → urun push ...
#
# Every other docker command, and all of them for those who can use Docker directly,
# go to the real docker unchanged.
#
#   URUN_DOCKER=urun    always send those commands to urun
#   URUN_DOCKER=docker  never (the function then only passes through)
#
# Nothing here grants anything: urun and urund decide what runs and what is built, and
# a refused docker flag is refused by urun with exit status 125.

# True when docker commands should go to the real docker.
__urun_docker_usable() {
    case "${URUN_DOCKER-}" in
        urun) return 1 ;;
        docker) return 0 ;;
    esac
    # A remote or non-default daemon is the user's own business.
    [ -n "${DOCKER_HOST-}" ] && return 0
    [ -r /var/run/docker.sock ] && [ -w /var/run/docker.sock ]
}

# The urun command for `docker $1 $2 ...`, and how many words it replaces
# ("COMMAND N"); nothing when urun does not offer it.
__urun_docker_command() {
    case "${1-}" in
        run) echo "run 1" ;;
        build) echo "build 1" ;;
        images) echo "images 1" ;;
        rmi) echo "rmi 1" ;;
        push) echo "push 1" ;;
        container)
            case "${2-}" in
                run) echo "run 2" ;;
            esac ;;
        image)
            case "${2-}" in
                build) echo "build 2" ;;
                ls|list) echo "images 2" ;;
                rm|remove) echo "rmi 2" ;;
                push) echo "push 2" ;;
            esac ;;
        builder)
            case "${2-}" in
                build) echo "build 2" ;;
            esac ;;
    esac
}

docker() {
    if ! __urun_docker_usable && command -v urun >/dev/null 2>&1; then
        local mapped words
        mapped=$(__urun_docker_command "${1-}" "${2-}")
        if [ -n "$mapped" ]; then
            words=${mapped#* }
            shift "$words"
            command urun "${mapped% *}" "$@"
            return
        fi
    fi
    command docker "$@"
}
